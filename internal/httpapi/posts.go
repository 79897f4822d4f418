package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/store"
)

// Posts follow Django REST framework's PostViewSet with
// IsAuthenticatedOrReadOnly: anyone reads published posts; users write;
// only the author (or an admin) changes or deletes a post.

// handlePostList lists published posts, newest first, with author names,
// optionally for one author (GET /api/v1/posts?author_id=&skip=&limit=).
func handlePostList(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		page, err := parsePage(c)
		if err != nil {
			return err
		}
		var f store.PostFilter
		if v := c.QueryParam("author_id"); v != "" {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				return errValidation(map[string]string{"author_id": "must be a positive integer"})
			}
			f.AuthorID = id
		}
		posts, total, err := store.NewPosts(d).ListPublished(c.Request().Context(), f, page)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, listResponse[store.Post]{Data: posts, Total: total})
	}
}

// loadPost returns the post named by the path if the caller may see it: a
// published post, or an unpublished one to its author and to admins.
// Anything else is a 404, so drafts do not reveal that they exist.
func loadPost(c echo.Context, d *sqlx.DB) (store.Post, error) {
	id, err := pathID(c, "id", "post")
	if err != nil {
		return store.Post{}, err
	}
	post, err := store.NewPosts(d).Get(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Post{}, errNotFound("post")
	}
	if err != nil {
		return store.Post{}, err
	}
	p := currentPrincipal(c)
	if !post.Published && !p.admin() && (p.User == nil || p.User.ID != post.AuthorID) {
		return store.Post{}, errNotFound("post")
	}
	return post, nil
}

// loadOwnPost is loadPost for writes: the caller must be the author or an
// admin (403 otherwise).
func loadOwnPost(c echo.Context, d *sqlx.DB) (store.Post, error) {
	post, err := loadPost(c, d)
	if err != nil {
		return post, err
	}
	p := currentPrincipal(c)
	if !p.admin() && p.User.ID != post.AuthorID {
		return store.Post{}, errForbidden("only the author or an admin may change this post")
	}
	return post, nil
}

// handlePostGet shows one post (GET /api/v1/posts/{id}).
func handlePostGet(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		post, err := loadPost(c, d)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, post)
	}
}

// handlePostCreate creates a post by the caller (POST /api/v1/posts).
func handlePostCreate(d *sqlx.DB) echo.HandlerFunc {
	type request struct {
		Title     string `json:"title" validate:"required,max=200"`
		Content   string `json:"content" validate:"max=100000"`
		Published bool   `json:"published"`
	}
	return func(c echo.Context) error {
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		req.Title = strings.TrimSpace(req.Title)
		if err := c.Validate(req); err != nil {
			return err
		}
		post, err := store.NewPosts(d).Create(c.Request().Context(), currentPrincipal(c).User.ID,
			req.Title, req.Content, req.Published)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, post)
	}
}

// handlePostUpdate changes the given fields of a post (PATCH /api/v1/posts/{id}).
func handlePostUpdate(d *sqlx.DB) echo.HandlerFunc {
	type request struct {
		Title     *string `json:"title" validate:"omitnil,min=1,max=200"`
		Content   *string `json:"content" validate:"omitnil,max=100000"`
		Published *bool   `json:"published"`
	}
	return func(c echo.Context) error {
		// Who may change the post first: someone else learns nothing from
		// how their body would have been judged.
		post, err := loadOwnPost(c, d)
		if err != nil {
			return err
		}
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		if req.Title != nil {
			t := strings.TrimSpace(*req.Title)
			req.Title = &t
		}
		if err := c.Validate(req); err != nil {
			return err
		}
		post, err = store.NewPosts(d).Update(c.Request().Context(), post.ID,
			store.PostPatch{Title: req.Title, Content: req.Content, Published: req.Published})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, post)
	}
}

// handlePostDelete deletes a post (DELETE /api/v1/posts/{id}).
func handlePostDelete(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		post, err := loadOwnPost(c, d)
		if err != nil {
			return err
		}
		if err := store.NewPosts(d).Delete(c.Request().Context(), post.ID); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}
}

// handlePostPublish publishes a post (POST /api/v1/posts/{id}/publish), the
// viewset's @action(detail=True).
func handlePostPublish(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		post, err := loadOwnPost(c, d)
		if err != nil {
			return err
		}
		published := true
		if _, err := store.NewPosts(d).Update(c.Request().Context(), post.ID, store.PostPatch{Published: &published}); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "published"})
	}
}
