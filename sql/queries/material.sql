-- A course and its study material inserted as an application would (worker/material.py):
-- the demo and the explanation evaluation load their sets with these.

-- name: material_insert_course
INSERT INTO app.courses (user_id, title) VALUES (%(user_id)s, %(title)s) RETURNING id;

-- name: material_insert_document
INSERT INTO app.documents (course_id, title, content, ai_summary)
VALUES (%(course_id)s, %(title)s, %(content)s, %(ai_summary)s) RETURNING id;

-- name: material_insert_chunk
INSERT INTO app.document_chunks (document_id, chunk_index, content)
VALUES (%(document_id)s, %(chunk_index)s, %(content)s);
