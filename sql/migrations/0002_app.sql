-- The reference application schema `app`: the tables the jobs read and write.
-- Names follow the public contract; kind-specific triggers arrive with their job kinds.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE app.users (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        text UNIQUE,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.courses (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                  bigint NOT NULL REFERENCES app.users (id),
    title                    text   NOT NULL,
    course_weakness_analysis jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.documents (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id  bigint NOT NULL REFERENCES app.courses (id),
    title      text   NOT NULL,
    content    text,
    ai_summary text,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);

CREATE TABLE app.document_chunks (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id          bigint  NOT NULL REFERENCES app.documents (id),
    chunk_index          integer NOT NULL,
    content              text    NOT NULL,
    embedding            vector,
    embedding_status     text    NOT NULL DEFAULT 'none'
                         CHECK (embedding_status IN ('none', 'pending', 'ready', 'failed', 'stale')),
    embedding_updated_at timestamptz,
    embedding_model      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (document_id, chunk_index)
);

CREATE TABLE app.questions (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id                   bigint  NOT NULL REFERENCES app.courses (id),
    -- multiple_choice: four choices and a key; descriptive: a reference answer, graded by score
    question_type               text    NOT NULL DEFAULT 'multiple_choice'
                                CHECK (question_type IN ('multiple_choice', 'descriptive')),
    question_text               text    NOT NULL,
    choice_1                    text,
    choice_2                    text,
    choice_3                    text,
    choice_4                    text,
    correct_choice              smallint CHECK (correct_choice BETWEEN 1 AND 4),
    reference_answer            text,
    max_score                   numeric,
    explanation                 text,
    subject                     text,
    scope                       text,
    exam_name                   text,
    exam_round                  text,
    source_note                 text,
    is_active                   boolean NOT NULL DEFAULT true,
    deleted_at                  timestamptz,
    ai_explanation              text,
    ai_explanation_status       text    NOT NULL DEFAULT 'none'
                                CHECK (ai_explanation_status IN
                                       ('none', 'pending', 'ready', 'failed', 'stale', 'skipped')),
    ai_explanation_generated_at timestamptz,
    ai_explanation_model        text,
    embedding                   vector,
    embedding_status            text    NOT NULL DEFAULT 'none'
                                CHECK (embedding_status IN ('none', 'pending', 'ready', 'failed', 'stale')),
    embedding_updated_at        timestamptz,
    embedding_model             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX questions_course ON app.questions (course_id) WHERE deleted_at IS NULL;

CREATE TABLE app.quizzes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    course_id  bigint NOT NULL REFERENCES app.courses (id),
    user_id    bigint NOT NULL REFERENCES app.users (id),
    kind       text   NOT NULL DEFAULT 'quiz' CHECK (kind IN ('quiz', 'mock_exam')),
    title      text,
    status     text   NOT NULL DEFAULT 'in_progress'
               CHECK (status IN ('draft', 'in_progress', 'submitted', 'grading', 'graded')),
    graded_at  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.quiz_answers (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    quiz_id         bigint  NOT NULL REFERENCES app.quizzes (id),
    -- questions are soft-deleted only; RESTRICT keeps answer history from a hard delete
    question_id     bigint  NOT NULL REFERENCES app.questions (id) ON DELETE RESTRICT,
    selected_choice smallint,
    answer_text     text,
    is_correct      boolean,
    unsure          boolean NOT NULL DEFAULT false,
    score           numeric,
    max_score       numeric,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (quiz_id, question_id)
);
