package store

import (
	"context"
	"fmt"
	"time"
)

// Post is a row of posts with its author's name (loaded by a join in the
// same query, so a list never queries once per row).
type Post struct {
	ID         int64     `db:"id" json:"id"`
	AuthorID   int64     `db:"author_id" json:"author_id"`
	AuthorName string    `db:"author_name" json:"author_name"`
	Title      string    `db:"title" json:"title"`
	Content    string    `db:"content" json:"content"`
	Published  bool      `db:"published" json:"published"`
	CreatedAt  time.Time `db:"created_at" json:"created_at"`
	UpdatedAt  time.Time `db:"updated_at" json:"updated_at"`
}

// PostFilter narrows a post list. Published lists are what everyone sees.
type PostFilter struct {
	AuthorID int64 // 0: every author
}

// Posts is the posts repository.
type Posts struct{ q Querier }

// NewPosts returns a repository over q.
func NewPosts(q Querier) *Posts { return &Posts{q: q} }

const postSelect = `SELECT p.id, p.author_id, u.name AS author_name, p.title, p.content, p.published,
       p.created_at, p.updated_at
  FROM posts p JOIN users u ON u.id = p.author_id`

// Create inserts a post by authorID and returns it.
func (r *Posts) Create(ctx context.Context, authorID int64, title, content string, published bool) (Post, error) {
	var id int64
	err := r.q.QueryRowxContext(ctx,
		`INSERT INTO posts (author_id, title, content, published) VALUES ($1, $2, $3, $4) RETURNING id`,
		authorID, title, content, published).Scan(&id)
	if err != nil {
		return Post{}, mapErr(err, "create post")
	}
	return r.Get(ctx, id)
}

// Get returns post id, published or not (callers decide who may see it).
func (r *Posts) Get(ctx context.Context, id int64) (Post, error) {
	var p Post
	err := r.q.GetContext(ctx, &p, postSelect+` WHERE p.id = $1`, id)
	return p, mapErr(err, fmt.Sprintf("get post %d", id))
}

// ListPublished returns one page of published posts, newest first, each with
// its author's name, and the total matching f. It runs exactly two queries
// whatever the page size: the page (joined with users) and the count.
func (r *Posts) ListPublished(ctx context.Context, f PostFilter, p Page) ([]Post, int64, error) {
	out := []Post{}
	err := r.q.SelectContext(ctx, &out,
		postSelect+` WHERE p.published AND ($1::bigint = 0 OR p.author_id = $1)
		 ORDER BY p.created_at DESC, p.id DESC OFFSET $2 LIMIT $3`, f.AuthorID, p.Skip, p.Limit)
	if err != nil {
		return nil, 0, mapErr(err, "list posts")
	}
	var total int64
	if err := r.q.GetContext(ctx, &total,
		`SELECT count(*) FROM posts WHERE published AND ($1::bigint = 0 OR author_id = $1)`, f.AuthorID); err != nil {
		return nil, 0, mapErr(err, "count posts")
	}
	return out, total, nil
}

// PostPatch holds the fields a PATCH may change; nil leaves a field as is.
type PostPatch struct {
	Title     *string
	Content   *string
	Published *bool
}

// Update applies patch to post id and returns the new row.
func (r *Posts) Update(ctx context.Context, id int64, patch PostPatch) (Post, error) {
	_, err := r.q.ExecContext(ctx,
		`UPDATE posts SET title = COALESCE($2, title), content = COALESCE($3, content),
		        published = COALESCE($4, published), updated_at = now()
		  WHERE id = $1`, id, patch.Title, patch.Content, patch.Published)
	if err != nil {
		return Post{}, mapErr(err, fmt.Sprintf("update post %d", id))
	}
	return r.Get(ctx, id)
}

// Delete deletes post id.
func (r *Posts) Delete(ctx context.Context, id int64) error {
	res, err := r.q.ExecContext(ctx, `DELETE FROM posts WHERE id = $1`, id)
	if err != nil {
		return mapErr(err, fmt.Sprintf("delete post %d", id))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete post %d: %w", id, ErrNotFound)
	}
	return nil
}
