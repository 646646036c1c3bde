"""Follow-ups searched as standalone questions (pipeline/followups.py); the end-to-end answer is
in test_rag.py."""

from __future__ import annotations

import socket

from core.answer import Turn
from pipeline.followups import FollowUpRewriter, clean, glued, subject_words, with_subject

SEQUENCE = [Turn("How do I create a sequence that starts at 1000?", "CREATE SEQUENCE name START 1000 [1].")]


def test_the_subject_search_keeps_what_the_previous_question_was_about_not_its_task():
    assert subject_words("How do I create a sequence that starts at 1000?") == "sequence 1000"
    assert subject_words("Which psql command lists the tables in the current database?") == (
        "psql command lists tables current database"
    )
    assert with_subject("How do I make it start over from 1 later?", SEQUENCE) == (
        "How do I make it start over from 1 later?\nsequence 1000"
    )
    assert glued("How do I make it start over from 1 later?", SEQUENCE).startswith("How do I create a sequence")
    assert with_subject("What is VACUUM?", []) == "What is VACUUM?"


def test_only_one_question_is_taken_from_the_model_reply():
    assert clean("[2] How do I rename a view?") == "How do I rename a view?"
    assert clean('"How do I remove a trigger from a table?"\nThis drops it.') == "How do I remove a trigger from a table?"
    assert clean("ALTER SEQUENCE name RESTART [1].") == ""  # an answer, not a question
    assert clean("") == clean("\n \n") == ""
    assert clean("Why " + "very " * 200 + "long?") == ""


def test_a_model_that_cannot_be_reached_falls_back_to_the_subject_search_quickly():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rewriter = FollowUpRewriter(f"http://127.0.0.1:{port}", timeout=5)
    out = rewriter.run(question="How do I make it start over from 1 later?", history=SEQUENCE, model="teambot-dev")
    assert out["method"] == "subject"
    assert out["question"] == with_subject("How do I make it start over from 1 later?", SEQUENCE)
    assert out["seconds"] < 5
    first = rewriter.run(question="What is VACUUM?", history=[], model="teambot-dev")
    assert (first["question"], first["method"]) == ("What is VACUUM?", "as asked")
