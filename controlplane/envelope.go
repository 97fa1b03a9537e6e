package controlplane

import (
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
)

func itoa(n int) string { return strconv.Itoa(n) }

// Meta is the paging block of every list response.
type Meta struct {
	Total      int `json:"total"`
	Page       int `json:"page"`
	PerPage    int `json:"perPage"`
	TotalPages int `json:"totalPages"`
}

// listParams are the common list query parameters.
type listParams struct {
	size, number int
	sortKey      string
	desc         bool
	search       string
}

const (
	defaultPageSize = 10
	maxPageSize     = 100
)

// parseList reads page[size], page[number], sort and search, reporting every bad one.
func parseList(c *fiber.Ctx, sortable []string, defaultSort string) (listParams, error) {
	lp := listParams{size: defaultPageSize, number: 1, search: strings.TrimSpace(c.Query("search"))}
	var ps problem.List
	if v := c.Query("page[size]"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			ps = append(ps, problem.New("invalid_parameter", "page[size]", "page[size] must be an integer from 1 to %d", maxPageSize))
		}
		lp.size = n
	}
	if v := c.Query("page[number]"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1_000_000 {
			ps = append(ps, problem.New("invalid_parameter", "page[number]", "page[number] must be a positive integer"))
		}
		lp.number = n
	}
	sortBy := c.Query("sort", defaultSort)
	lp.desc = strings.HasPrefix(sortBy, "-")
	lp.sortKey = strings.TrimPrefix(sortBy, "-")
	if !slices.Contains(sortable, lp.sortKey) {
		ps = append(ps, problem.New("invalid_parameter", "sort", "sort must be one of %s (prefix - for descending)", strings.Join(sortable, ", ")))
	}
	if len(lp.search) > 200 {
		ps = append(ps, problem.New("invalid_parameter", "search", "search is limited to 200 characters"))
	}
	if len(ps) > 0 {
		return lp, fail(fiber.StatusBadRequest, ps...)
	}
	return lp, nil
}

// page slices items and builds the meta block.
func page[T any](items []T, lp listParams) ([]T, Meta) {
	total := len(items)
	m := Meta{Total: total, Page: lp.number, PerPage: lp.size, TotalPages: (total + lp.size - 1) / lp.size}
	start := (lp.number - 1) * lp.size
	if start >= total {
		return []T{}, m
	}
	return items[start:min(start+lp.size, total)], m
}

func sendList[T any](c *fiber.Ctx, items []T, m Meta) error {
	return c.JSON(fiber.Map{"data": items, "meta": m})
}

func sendData(c *fiber.Ctx, status int, v any) error {
	return c.Status(status).JSON(fiber.Map{"data": v})
}
