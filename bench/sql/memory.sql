-- Queries of bench/memory.py and bench/embeddings.py.

-- name: seed_course
INSERT INTO app.users (email) VALUES ('bench@example.com');
INSERT INTO app.courses (user_id, title) VALUES (1, '정보처리기사');

-- name: insert_questions
-- New questions, as the app inserts them: the triggers enqueue one embedding job each.
INSERT INTO app.questions (course_id, question_text, choice_1, choice_2, choice_3, choice_4,
                           correct_choice, subject)
SELECT 1,
       format('%%s에 관한 설명으로 옳지 않은 것은? (문항 %%s, %%s)',
              (ARRAY['트랜잭션의 원자성', '정규화', '인덱스', '교착 상태', '해시 함수',
                     'TCP 흐름 제어', '가상 메모리', '프로세스 스케줄링'])[1 + g %% 8],
              g, substr(md5(g::text), 1, 8)),
       '보기 가 ' || g, '보기 나 ' || (g * 7 %% 101), '보기 다 ' || (g * 13 %% 103),
       '보기 라 ' || (g * 17 %% 107), 1 + g %% 4, '과목 ' || (g %% 5)
FROM generate_series(%(start)s::int, %(start)s::int + %(n)s::int - 1) AS g;

-- name: embedded_count
SELECT count(*) FILTER (WHERE embedding_status = 'ready')::int AS ready,
       count(*) FILTER (WHERE embedding_status = 'failed')::int AS failed
FROM app.questions;

-- name: embedding_calls
SELECT count(*)::int AS calls, sum(latency_ms)::float8 AS latency_ms_sum
FROM queue.model_calls WHERE call = 'embedding' AND kind = 'embedding';
