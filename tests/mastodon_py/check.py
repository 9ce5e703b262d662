#!/usr/bin/env python3
"""Drives the test Mastodon emulator with Mastodon.py, an independent client library.

Usage: check.py MODE BASE_URL TOKEN
  main       verify_credentials, instance, posting with an Idempotency-Key, replies and
             thread context, notification paging both ways, account statuses, 422 and 401
             errors, rate-limit headers, and the SSE user stream. For the stream it prints
             {"ready": "stream"} and waits for the caller to post a mention.
  ratelimit  calls until the server answers 429 (the caller set a small budget).

The last line printed is a JSON summary; the Rust test (tests/tests/mastodon_emulator.rs)
sets up the emulator, runs this, and asserts on the summary. Needs `pip install Mastodon.py`.
"""

import json
import sys
import threading
import time

from mastodon import (
    Mastodon,
    MastodonAPIError,
    MastodonRatelimitError,
    MastodonUnauthorizedError,
    StreamListener,
)


def client(base, token):
    return Mastodon(
        access_token=token,
        api_base_url=base,
        ratelimit_method="throw",
        request_timeout=10,
    )


def ids(items):
    return [str(item.id) for item in items or []]


def error_summary(err):
    return {"type": type(err).__name__, "args": [str(a) for a in err.args]}


class Listener(StreamListener):
    def __init__(self):
        super().__init__()
        self.notifications = []
        self.updates = 0
        self.heartbeats = 0
        self.got = threading.Event()

    def on_notification(self, notification):
        self.notifications.append(notification)
        self.got.set()

    def on_update(self, status):
        self.updates += 1

    def handle_heartbeat(self):
        self.heartbeats += 1

    def on_unknown_event(self, name, unknown_event=None):
        pass


def main_checks(base, token):
    m = client(base, token)
    out = {}

    me = m.account_verify_credentials()
    out["me"] = {"id": str(me.id), "username": me.username, "acct": me.acct}
    out["version"] = m.retrieve_mastodon_version()

    inst = m.instance()
    out["instance"] = {
        "max_characters": inst.configuration.statuses.max_characters,
        "characters_reserved_per_url": inst.configuration.statuses.characters_reserved_per_url,
        "streaming": inst.configuration.urls.streaming,
        "api_version": m.mastodon_api_version,
    }

    first = m.status_post(
        "New post: https://blog.example/posts/1", idempotency_key="article-1", language="en"
    )
    again = m.status_post("Different text, same key", idempotency_key="article-1")
    out["idempotency"] = {
        "first": str(first.id),
        "second": str(again.id),
        "content": first.content,
        "card": first.card,
        "visibility": first.visibility,
    }

    reply = m.status_post("@alice@other.host thanks!", in_reply_to_id=first.id)
    out["context"] = {
        "reply": str(reply.id),
        "reply_in_reply_to": str(reply.in_reply_to_id),
        "reply_mentions": [mention.acct for mention in reply.mentions],
        "descendants_of_first": ids(m.status_context(first.id).descendants),
        "ancestors_of_reply": ids(m.status_context(reply.id).ancestors),
    }

    # Backwards through all mentions, two at a time, by the "next" links.
    page = m.notifications(types=["mention"], limit=2)
    backward = [ids(page)]
    while True:
        page = m.fetch_next(page)
        if not page:
            break
        backward.append(ids(page))
    out["backward_pages"] = backward
    out["first_notification"] = {
        "type": m.notifications(types=["mention"], limit=1)[0].type,
    }

    # Forwards from the oldest, by min_id and the "prev" links.
    oldest = [i for p in backward for i in p][-1]
    page = m.notifications(types=["mention"], min_id=oldest, limit=2)
    forward = [ids(page)]
    while True:
        page = m.fetch_previous(page)
        if not page:
            break
        forward.append(ids(page))
    out["oldest"] = oldest
    out["forward_pages"] = forward

    # A reply to someone else's status (the newest mention); exclude_replies drops it but
    # keeps the self-reply above (a thread).
    newest = m.notifications(types=["mention"], limit=1)[0]
    answer = m.status_post("@alice@other.host you are welcome", in_reply_to_id=newest.status.id)
    out["answer"] = {"id": str(answer.id), "in_reply_to_account_id": str(answer.in_reply_to_account_id)}
    out["account_statuses"] = ids(m.account_statuses(me.id, exclude_replies=True, limit=40))
    out["account_statuses_all"] = ids(m.account_statuses(me.id, limit=40))

    try:
        m.status_post("   ")
        out["blank"] = "accepted"
    except MastodonAPIError as err:
        out["blank"] = error_summary(err)
    try:
        m.status_post("x" * (inst.configuration.statuses.max_characters + 1))
        out["too_long"] = "accepted"
    except MastodonAPIError as err:
        out["too_long"] = error_summary(err)
    # A long URL counts 23, so this fits.
    url = "https://blog.example/" + "p" * 600
    fits = "y" * (inst.configuration.statuses.max_characters - 24) + " " + url
    out["long_url_accepted"] = str(m.status_post(fits).id)

    try:
        client(base, "not-a-token").account_verify_credentials()
        out["unauthorized"] = "accepted"
    except MastodonUnauthorizedError as err:
        out["unauthorized"] = error_summary(err)

    out["ratelimit"] = {
        "limit": m.ratelimit_limit,
        "remaining": m.ratelimit_remaining,
        "reset": m.ratelimit_reset,
        "now": time.time(),
    }

    listener = Listener()
    handle = m.stream_user(listener, run_async=True)
    deadline = time.time() + 10
    while listener.heartbeats < 2 and time.time() < deadline:
        time.sleep(0.02)
    print(json.dumps({"ready": "stream"}), flush=True)
    got = listener.got.wait(10)
    handle.close()
    notification = listener.notifications[0] if got else None
    out["stream"] = {
        "heartbeats": listener.heartbeats,
        "notification": None
        if notification is None
        else {
            "id": str(notification.id),
            "type": notification.type,
            "account": notification.account.acct,
            "content": notification.status.content,
        },
    }
    return out


def ratelimit_checks(base, token):
    m = client(base, token)
    out = {"calls": 0}
    try:
        for _ in range(50):
            m.account_verify_credentials()
            out["calls"] += 1
        out["error"] = None
    except MastodonRatelimitError as err:
        out["error"] = error_summary(err)
    out["remaining"] = m.ratelimit_remaining
    out["limit"] = m.ratelimit_limit
    out["reset"] = m.ratelimit_reset
    out["now"] = time.time()
    return out


def main():
    mode, base, token = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "main":
        out = main_checks(base, token)
    elif mode == "ratelimit":
        out = ratelimit_checks(base, token)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
