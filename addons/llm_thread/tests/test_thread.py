"""Threads and messages, and the thread's cross-process generation lock."""

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import UserError

ROOT = Path(__file__).parents[3]


def test_message_post_returns_the_message(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        user = thread.message_post(body="hi", llm_role="user")
        call = thread.message_post(
            llm_role="assistant", body_json={"tool_calls": [{"id": "c1", "name": "search"}]}
        )
        tool = thread.message_post(body="42", llm_role="tool", author_id=False)
        assert user._name == "llm.message" and user.thread_id == thread
        assert (user.author_id.id, call.author_id.id, tool.author_id.id) == (env.uid, False, False)
        assert call.body_json["tool_calls"][0]["name"] == "search"
        assert thread.message_ids == user | call | tool
        assert thread.message_ids.mapped("state") == ["done"] * 3


def test_a_thread_belongs_to_its_creator(registry, openai_server):
    with registry.environment() as env:
        alice = env["res.users"].create(
            {"name": "A", "login": "a", "groups_id": [env.ref("base.group_user").id]}
        )
        provider = env["llm.provider"].create({"name": "p", "service": "openai"})
        thread = env["llm.thread"].with_user(alice).create({"provider_id": provider.id})
        assert thread.user_id == alice and thread.name == "New chat"


def test_an_expired_lock_is_taken_over(registry, make_thread, openai_server):
    """A process that died while generating leaves its lock; it lapses after LOCK_SECONDS."""
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        token = thread._take_generation_lock()
        env.cr.commit()
        with pytest.raises(UserError, match="already generating"):
            next(thread.generate_response("blocked"))
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        thread.write({"generation_lock_until": past})
        env.cr.commit()
        assert list(thread.generate_response("taken over"))[-1]["type"] == "done"
        with pytest.raises(UserError, match="lost its generation lock"):
            thread._renew_generation_lock(token)
        assert thread.generation_lock_token is False


def test_a_refused_start_leaves_nothing_behind(registry, make_thread, openai_server):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        thread = env["llm.thread"].browse(thread_id)
        thread._take_generation_lock()
        env.cr.commit()
        with pytest.raises(UserError):
            next(thread.generate_response("refused"))
        env.cr.commit()  # a caller that commits after the refusal
        assert not thread.message_ids


LOCKED_ELSEWHERE = textwrap.dedent(
    """
    import sys
    from core import Registry, UserError

    registry = Registry(sys.argv[1], addons=["llm_thread"])
    with registry.environment() as env:
        try:
            next(env["llm.thread"].browse(int(sys.argv[2])).generate_response("b"))
        except UserError as error:
            print(error)
    registry.close()
    """
)


def test_the_lock_holds_across_processes(registry, make_thread, openai_server, db_url):
    thread_id = make_thread(openai_server)
    with registry.environment() as env:
        first = env["llm.thread"].browse(thread_id).generate_response("[sim:tokens=50] a")
        next(first)
        other = subprocess.run(
            [sys.executable, "-c", LOCKED_ELSEWHERE, db_url, str(thread_id)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 0, other.stderr
        assert "already generating a response; wait for it to finish" in other.stdout
        assert list(first)[-1]["type"] == "done"
