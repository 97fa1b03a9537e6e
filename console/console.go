// Package console is flowd's web console: the single-page app that `make console` builds from
// this folder with npm into dist/, embedded in the binary and served at / by the api role and
// `flowd dev`.
//
// The app routes in the URL's fragment (/#/flows/...), because the FlowMate partner API owns
// /flows and /users at the root: the server only ever serves /, the hashed files under /assets
// and the few other files at the top of dist/, and has no fallback to index.html.
package console

import (
	"embed"
	"errors"
	"io/fs"
	"net/url"
	"path"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/compress"
	"github.com/gofiber/fiber/v2/middleware/etag"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

// dist holds the built app, or only its placeholder (.gitkeep) before the npm build: "all:" so
// that the placeholder keeps the pattern valid in a fresh checkout.
//
//go:embed all:dist
var dist embed.FS

// Files is the embedded app, rooted at dist/, and whether it is built (has index.html).
func Files() (fs.FS, bool) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid name: fs.Sub cannot fail on it
	}
	return sub, Built(sub)
}

// Built says whether fsys holds a built app.
func Built(fsys fs.FS) bool {
	st, err := fs.Stat(fsys, indexFile)
	return err == nil && st.Mode().IsRegular()
}

const (
	indexFile = "index.html"
	assetsDir = "assets"

	// CodeNotBuilt is the error code of GET / in a binary built without the app.
	CodeNotBuilt = "console_not_built"

	// ContentSecurityPolicy lets the app load only its own files and call only its own API: no
	// inline script, no framing; inline styles stay allowed for the style attributes it sets.
	ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

	// Vite names every file under assets/ by its content: a changed file is a new URL.
	cacheImmutable = "public, max-age=31536000, immutable"
	// index.html and the other top-level files keep their names across builds.
	cacheRevalidate = "no-cache"
)

// Mount serves fsys (rooted like dist/) on r: GET and HEAD of /, /assets/* and the top-level
// files of fsys. Any other path, and a top-level name fsys lacks, goes on to r's next handler
// (the API's 404). A fsys without index.html answers / with a 503 saying how to build the app.
func Mount(r fiber.Router, fsys fs.FS) {
	s := &site{fsys: fsys, built: Built(fsys), top: topFiles(fsys)}
	// Both leave errors, and requests the handler passes on, alone.
	zip := compress.New()
	tag := etag.New(etag.Config{Weak: true}) // weak: the same tag names the gzipped body too
	r.Get("/", zip, tag, s.index)
	r.Get("/"+assetsDir+"/*", zip, s.asset)
	r.Get("/:file", zip, tag, s.file)
}

type site struct {
	fsys  fs.FS
	built bool
	top   map[string]string // lower-cased name -> name of the files served at the root
}

// topFiles lists the files served at the root: regular and not hidden (the placeholder and the
// build stamp are dot files).
func topFiles(fsys fs.FS) map[string]string {
	top := map[string]string{}
	entries, _ := fs.ReadDir(fsys, ".") // unreadable: nothing is served at the top
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			top[strings.ToLower(e.Name())] = e.Name() // fiber's routes ignore case
		}
	}
	return top
}

// secure sets the headers of every console answer, errors included.
func secure(c *fiber.Ctx) {
	c.Set(fiber.HeaderContentSecurityPolicy, ContentSecurityPolicy)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	c.Set(fiber.HeaderXFrameOptions, "DENY")
}

func (s *site) index(c *fiber.Ctx) error {
	if !s.built {
		secure(c)
		return httpproblem.New(fiber.StatusServiceUnavailable, problem.New(CodeNotBuilt, "",
			"the web console is not built into this binary: run `make build` (it builds the console with npm first), or serve without it (--console=false)"))
	}
	return s.send(c, indexFile, cacheRevalidate)
}

func (s *site) asset(c *fiber.Ctx) error {
	// fiber routes the path as sent: dot segments and escapes are still in it.
	name, err := url.PathUnescape(c.Params("*"))
	if err != nil || !servable(name) {
		return notFound(c)
	}
	err = s.send(c, path.Join(assetsDir, name), cacheImmutable)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound(c)
	}
	return err
}

// file serves a top-level file of the app and passes any other name on, so that the route takes
// nothing from the paths the API answers at the root.
func (s *site) file(c *fiber.Ctx) error {
	name, err := url.PathUnescape(c.Params("file"))
	if err != nil {
		return c.Next()
	}
	name, ok := s.top[strings.ToLower(name)]
	if !ok {
		return c.Next()
	}
	return s.send(c, name, cacheRevalidate)
}

// servable refuses what could leave assets/ or reach a hidden file: dot segments, rooted and
// empty names, dot files.
func servable(name string) bool {
	if name == "" || !fs.ValidPath(name) {
		return false
	}
	for elem := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(elem, ".") {
			return false
		}
	}
	return true
}

// send answers with the regular file name of the app; fs.ErrNotExist when there is none.
func (s *site) send(c *fiber.Ctx, name, cacheControl string) error {
	st, err := fs.Stat(s.fsys, name)
	if err != nil || !st.Mode().IsRegular() {
		return fs.ErrNotExist // a directory is not listed
	}
	body, err := fs.ReadFile(s.fsys, name)
	if err != nil {
		return err
	}
	secure(c)
	c.Set(fiber.HeaderContentType, contentType(name))
	c.Set(fiber.HeaderCacheControl, cacheControl)
	return c.Send(body)
}

func notFound(c *fiber.Ctx) error {
	secure(c)
	return httpproblem.New(fiber.StatusNotFound, problem.New(httpproblem.CodeNotFound, "", "no console file %s", c.Path()))
}

// contentTypes are those of what a Vite build writes; a fixed table, unlike the system's MIME
// database, answers alike on every machine.
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".woff":        "font/woff",
	".woff2":       "font/woff2",
	".ttf":         "font/ttf",
	".wasm":        "application/wasm",
}

func contentType(name string) string {
	if t, ok := contentTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return fiber.MIMEOctetStream
}
