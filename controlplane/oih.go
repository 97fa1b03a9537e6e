package controlplane

import (
	"encoding/json"
	"errors"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/oih"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

// Open Integration Hub documents (internal/oih) are accepted wherever a flow document is, told
// apart by their shape, and GET /flows/{id}?format=oih gives a flow back in that shape.

// formatOIH is the value of ?format= that asks for the OIH shape.
const formatOIH = "oih"

// isTrigger tells the mapping which functions are a connector's poll triggers.
func (s *Server) isTrigger(connector, function string) bool {
	e, ok := s.cfg.Catalog.Get(connector)
	if !ok {
		return false
	}
	_, ok = e.Manifest.Triggers[function]
	return ok
}

// decodeAny decodes a flow document in either shape. Problems point into the document as it
// was sent; warnings name what an OIH document holds that flowd does not keep.
func (s *Server) decodeAny(obj map[string]any) (*flowdoc.Flow, problem.List, oih.Layout, error) {
	if !oih.Detect(obj) {
		f, err := s.decodeFlow(obj)
		return f, nil, oih.Layout{}, err
	}
	im := oih.Import(obj, s.isTrigger)
	f, err := s.decodeFlow(im.Doc)
	ps := im.Problems
	var ae *httpproblem.Error
	if errors.As(err, &ae) {
		ps = append(ps, im.Translate(ae.Problems)...)
	} else if err != nil {
		return nil, nil, im.Layout, err
	}
	if len(ps) > 0 {
		return nil, nil, im.Layout, fail(fiber.StatusBadRequest, ps...)
	}
	return f, im.Warnings, im.Layout, nil
}

// inOIH points the problems of an API error into the OIH document that l describes.
func inOIH(err error, l oih.Layout) error {
	var ae *httpproblem.Error
	if !errors.As(err, &ae) {
		return err
	}
	out := *ae
	out.Problems = l.Translate(ae.Problems)
	return &out
}

// mergeOIH applies an RFC 7396 merge patch written in the OIH shape to the flow's OIH
// document, and maps the result back.
func (s *Server) mergeOIH(cur *flowdoc.Flow, patch []byte) (*flowdoc.Flow, problem.List, error) {
	content := contentOf(cur)
	base, err := oih.Export(&content, s.isTrigger)
	if err != nil {
		return nil, nil, err
	}
	baseDoc, err := json.Marshal(base)
	if err != nil {
		return nil, nil, err
	}
	merged, err := jsonpatch.MergePatch(baseDoc, patch)
	if err != nil {
		return nil, nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot apply the change: %v", err))
	}
	var obj map[string]any
	if err := json.Unmarshal(merged, &obj); err != nil {
		return nil, nil, err
	}
	if !oih.Detect(obj) {
		f, err := s.decodeFlow(obj)
		return f, nil, err
	}
	f, warnings, _, err := s.decodeAny(obj)
	return f, warnings, err
}

// oihRoute reports whether the request came by the root routes (the Flow Repository's API),
// whose start answers in the terms of the flow's OIH document.
func oihRoute(c *fiber.Ctx) bool {
	return !strings.HasPrefix(c.Route().Path, "/api/")
}

// startProblems is what keeps a stored flow from starting beyond what a save checks (its
// drafts), in the terms of the route's document shape.
func startProblems(c *fiber.Ctx, f *flowdoc.Flow) problem.List {
	if oihRoute(c) {
		return oih.StartProblems(f)
	}
	return flowdoc.StartProblems(f)
}

// sendFlow answers with a stored flow, and the warnings of its document if any.
func sendFlow(c *fiber.Ctx, status int, f *flowdoc.Flow, warnings problem.List) error {
	if len(warnings) > 0 {
		return c.Status(status).JSON(fiber.Map{"data": f, "warnings": warnings})
	}
	return sendData(c, status, f)
}

// sendOIH answers GET /flows/{id}?format=oih.
func (s *Server) sendOIH(c *fiber.Ctx, f *flowdoc.Flow) error {
	doc, err := oih.Export(f, s.isTrigger)
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, doc)
}

// parseFormat reads ?format=: "" or flowd for flowd's document, oih for the OIH one.
func parseFormat(c *fiber.Ctx) (string, error) {
	switch v := c.Query("format"); v {
	case "", "flowd":
		return "", nil
	case formatOIH:
		return formatOIH, nil
	default:
		return "", fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "format", "format must be flowd or oih, not %q", v))
	}
}
