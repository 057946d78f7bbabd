#!/usr/bin/env python3
"""A hostile fake OpenAI/OpenRouter-compatible server against the real freeroute binary.

Python 3.11, standard library only. For each seed, a fresh fake server on 127.0.0.1 (asyncio
raw sockets, so it can send anything) answers GOOD_MODEL properly and HOSTILE_MODEL with one
seeded malformation class (mixed with harmless oddities), and freeroute is run as
`freeroute --timeout 5 [--stream|--json] [-v] -m HOSTILE -m GOOD PROMPT` with a fresh HOME,
a cleared environment and a test key. Counted per run:

- panics: exit 101 or 134, death by a signal we did not send, or "panicked" in stderr;
- overdue: wall time over the 5 s deadline plus 3 s of grace;
- peak RSS (os.wait4's ru_maxrss): max and median;
- wrong answers with exit 0: stdout (or --json's `content`) not exactly the expected text;
  the expected text is HOSTILE's own for harmless oddities, GOOD's for damage;
- harmless oddities that failed: a harmless class that exited non-zero (its text was whole);
- key fragments: any 12-character piece of the key anywhere under HOME, in stdout or stderr,
  or in what `freeroute stats` and `stats --json` print afterwards in the same HOME;
- key at the redirect target: a request with an Authorization header reaching the port a
  redirect pointed to.

All must be zero, and the largest RSS under 64 MB; otherwise the exit status is 1.

  python3 bench/hostile.py                    # 500 seeds, 2 at a time, prints a Markdown summary
  python3 bench/hostile.py --seeds 0-49       # a range
  python3 bench/hostile.py --seed 17 -v       # one seed, with its command, outputs and HOME kept
  FREEROUTE_BIN=path/to/freeroute python3 bench/hostile.py
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gzip
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HOSTILE = "hostile/evil-70b-instruct:free"
GOOD = "good/honest-32b:free"
HOSTILE_PIECES = ["Hostile ", "but ", "harmless: ", "ünïcödé ", "ok."]
HOSTILE_TEXT = "".join(HOSTILE_PIECES)
GOOD_TEXT = "Good model answers in full."
PROMPT = "say something"
TIMEOUT_S = 5.0
GRACE_S = 3.0
HARD_KILL_S = 20.0  # a run still going then is killed (and counted overdue)
CONNECTION_LIMIT_S = 15.0  # the longest the fake serves one connection
FLOOD_LIMIT = 1 << 31  # bytes a flood sends at most
RSS_LIMIT = 64_000_000  # bytes
FRAGMENT = 12

# ---- classes -------------------------------------------------------------------------

# name -> (kind, weight). kind: "harmless" (expect HOSTILE's text), "damage" (expect GOOD's
# text on exit 0; any failure exit is fine), "either" (HOSTILE's or GOOD's text).
CLASSES = {
    "keepalives": ("harmless", 3),
    "bom": ("harmless", 3),
    "odd_splits": ("harmless", 3),
    "wrong_type_fields": ("harmless", 3),
    "negative_usage": ("harmless", 2),
    "trailing_noise": ("harmless", 2),
    "finish_then_silence": ("harmless", 3),
    "endless_json_body": ("damage", 3),
    "endless_sse_line": ("damage", 3),
    "endless_event": ("damage", 3),
    "huge_retry_after": ("damage", 3),
    "auth_echo_plain": ("damage", 3),
    "auth_echo_json": ("damage", 3),
    "unbalanced_json": ("damage", 3),
    "invalid_utf8": ("damage", 3),
    "content_wrong_type": ("damage", 3),
    "token_then_keepalives": ("damage", 3),
    "drop_mid_stream": ("damage", 3),
    "error_in_stream": ("damage", 3),
    "429_upstream": ("damage", 2),
    "429_quota": ("damage", 2),
    "5xx": ("damage", 2),
    "redirect": ("damage", 3),
    "gzip_garbage": ("damage", 3),
    "garbage_status": ("damage", 3),
    "no_body": ("damage", 3),
    "huge_header": ("either", 3),
    "endless_models": ("either", 1),
}
MODES = ["plain", "stream", "json"]


def key_for(seed: int) -> str:
    r = random.Random(f"key-{seed}")
    return "sk-or-v1-" + "".join(r.choice("0123456789abcdef") for _ in range(64))


def fragments(key: str) -> list[bytes]:
    return [key[i : i + FRAGMENT].encode() for i in range(len(key) - FRAGMENT + 1)]


@dataclass
class Case:
    seed: int
    cls: str
    kind: str
    mode: str
    verbose: bool
    key: str

    def args(self) -> list[str]:
        a = ["--timeout", str(int(TIMEOUT_S))]
        if self.mode == "stream":
            a.append("--stream")
        elif self.mode == "json":
            a.append("--json")
        if self.verbose:
            a.append("-v")
        return a + ["-m", HOSTILE, "-m", GOOD, PROMPT]

    def expected(self) -> set[str]:
        return {"harmless": {HOSTILE_TEXT}, "damage": {GOOD_TEXT}, "either": {HOSTILE_TEXT, GOOD_TEXT}}[self.kind]


def case_for(seed: int) -> Case:
    r = random.Random(seed)
    names = list(CLASSES)
    cls = r.choices(names, weights=[CLASSES[n][1] for n in names])[0]
    mode = r.choice(MODES)
    verbose = r.random() < 0.3
    return Case(seed, cls, CLASSES[cls][0], mode, verbose, key_for(seed))


# ---- wire pieces (shapes from shared/reference/openrouter.md §3) ---------------------


def chunk_obj(model, delta, finish=None):
    return {
        "id": "gen-1768896871-9HgAQqS1Z72C6gApaidi",
        "provider": "OpenInference",
        "model": model,
        "object": "chat.completion.chunk",
        "created": 1768896871,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish, "logprobs": None}],
    }


def dumps(v) -> bytes:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()


def usage_obj(model, n):
    return {
        "id": "gen-1", "provider": "OpenInference", "model": model, "object": "chat.completion.chunk",
        "created": 1768896871,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n},
    }


def catalog_body() -> bytes:
    def entry(mid, ctx):
        return {
            "id": mid, "canonical_slug": mid, "name": mid, "created": 1760000000, "context_length": ctx,
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"], "modality": "text->text", "tokenizer": "Other", "instruct_type": None},
            "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
            "top_provider": {"context_length": ctx, "max_completion_tokens": None, "is_moderated": False},
            "per_request_limits": None, "supported_parameters": ["max_tokens", "temperature"],
            "default_parameters": None, "expiration_date": None,
        }
    return dumps({"data": [entry(HOSTILE, 131072), entry(GOOD, 40960)]})


CATALOG = catalog_body()


def good_sse(model, pieces) -> list[bytes]:
    ev = [b": OPENROUTER PROCESSING\n\n", b"data: " + dumps(chunk_obj(model, {"role": "assistant", "content": "", "reasoning": None})) + b"\n\n"]
    for p in pieces:
        ev.append(b"data: " + dumps(chunk_obj(model, {"role": "assistant", "content": p})) + b"\n\n")
    ev.append(b"data: " + dumps(chunk_obj(model, {"role": "assistant", "content": ""}, "stop")) + b"\n\n")
    ev.append(b"data: " + dumps(usage_obj(model, len(pieces))) + b"\n\n")
    ev.append(b"data: [DONE]\n\n")
    return ev


def good_json(model, text) -> bytes:
    return dumps({
        "id": "gen-2", "provider": "OpenInference", "model": model, "object": "chat.completion", "created": 1768896871,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    })


# ---- the server ----------------------------------------------------------------------

REASONS = {200: "OK", 204: "No Content", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect",
           308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}

_BOMB: bytes | None = None


def gzip_bomb() -> bytes:
    global _BOMB
    if _BOMB is None:
        _BOMB = gzip.compress(b"a" * (256 << 20), compresslevel=9)
    return _BOMB


class Closed(Exception):
    pass


@dataclass
class RunServer:
    case: Case
    requests: list = field(default_factory=list)  # (port kind, method, path, headers)
    redirect_hits: list = field(default_factory=list)
    servers: list = field(default_factory=list)
    port: int = 0
    redirect_port: int = 0
    tasks: set = field(default_factory=set)


async def read_request(reader):
    try:
        line = await reader.readline()
    except (ConnectionError, ValueError):
        return None
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        return None
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(n) if n else b""
    return parts[0], parts[1], headers, body


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.chunked = False

    async def raw(self, b: bytes):
        self.writer.write(b)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise Closed() from e
        if self.writer.is_closing():
            raise Closed()

    async def head(self, status, headers, chunked=True, reason=None):
        self.chunked = chunked
        lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Status')}"]
        for k, v in headers:
            lines.append(f"{k}: {v}")
        if chunked:
            lines.append("transfer-encoding: chunked")
        await self.raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def body(self, b: bytes):
        if not b:
            return
        await self.raw(f"{len(b):x}\r\n".encode() + b + b"\r\n" if self.chunked else b)

    async def end(self):
        if self.chunked:
            await self.raw(b"0\r\n\r\n")

    async def full(self, status, headers, body: bytes):
        await self.head(status, headers + [("content-length", str(len(body)))], chunked=False)
        await self.raw(body)

    async def flood(self, piece: bytes):
        big = piece * max(1, (64 << 10) // len(piece))
        sent = 0
        while sent < FLOOD_LIMIT:
            await self.body(big)
            sent += len(big)

    async def hang(self, every: float | None = None, piece: bytes = b""):
        """Keeps the connection open (sending `piece` every `every` s) until the client leaves."""
        end = time.monotonic() + CONNECTION_LIMIT_S
        while time.monotonic() < end:
            if every is None:
                try:
                    got = await asyncio.wait_for(self.reader.read(1 << 16), timeout=end - time.monotonic())
                except asyncio.TimeoutError:
                    return
                if not got:
                    raise Closed()
            else:
                await asyncio.sleep(every)
                await self.body(piece)
        raise Closed()


def json_headers():
    return [("content-type", "application/json")]


def sse_headers():
    return [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def harmless_events(r: random.Random, model, pieces, mods: set[str]) -> bytes:
    """A whole, valid answer with the harmless oddities in `mods`."""
    ev = []
    ka = [b": OPENROUTER PROCESSING\n\n", b":\n\n", b": keep-alive\r\n\r\n", b": ping\n\n"]
    if "keepalives" in mods:
        ev += [r.choice(ka) for _ in range(r.randint(1, 20))]
    ev.append(b"data: " + dumps(chunk_obj(model, {"role": "assistant", "content": "", "reasoning": None})) + b"\n\n")
    for p in pieces:
        if "keepalives" in mods:
            ev += [r.choice(ka) for _ in range(r.randint(0, 4))]
        c = chunk_obj(model, {"role": "assistant", "content": p})
        if "wrong_type_fields" in mods:
            match r.randrange(6):
                case 0: c["model"] = 12345
                case 1: c["created"] = "yesterday"
                case 2: c["choices"][0]["delta"]["reasoning"] = 7
                case 3: c["provider"] = {"name": ["x"]}
                case 4: c["id"] = None
                case _: c["choices"][0]["logprobs"] = "none"
        if "negative_usage" in mods and r.random() < 0.5:
            c["usage"] = {"prompt_tokens": -1, "completion_tokens": -99999999999, "total_tokens": r.choice([-5, 1e308, "many"])}
        end = r.choice([b"\n\n", b"\r\n\r\n", b"\r\r"]) if "odd_splits" in mods else b"\n\n"
        ev.append(b"data: " + dumps(c) + end)
    ev.append(b"data: " + dumps(chunk_obj(model, {"role": "assistant", "content": ""}, "stop")) + b"\n\n")
    u = usage_obj(model, len(pieces))
    if "negative_usage" in mods:
        u["usage"] = {"prompt_tokens": -1, "completion_tokens": r.choice([-7, -1e308, 1e308]), "total_tokens": -1}
    ev.append(b"data: " + dumps(u) + b"\n\n")
    if "finish_then_silence" not in mods:
        ev.append(b"data: [DONE]\n\n")
    if "trailing_noise" in mods:
        noise = [b"data: trailing noise after the end\n\n", b"\xff\xfe garbage {{{\n\n", b"data: {\"choices\":[{\"delta\":{\"content\":\"EXTRA\"}}]}\n\n"]
        ev += r.sample(noise, r.randint(1, 3))
    data = b"".join(ev)
    if "bom" in mods:
        data = b"\xef\xbb\xbf" + data
    return data


async def send_split(conn: Conn, r: random.Random, data: bytes, odd: bool):
    if not odd:
        await conn.body(data)
        return
    i = 0
    while i < len(data):
        n = r.randint(1, 64)
        await conn.body(data[i : i + n])
        i += n
        if r.random() < 0.05:
            await asyncio.sleep(0.002)


def damaged_piece_events(r: random.Random, model, cls, key) -> tuple[list[bytes], int]:
    """Chunks of HOSTILE's answer with piece `i` damaged; returns the events and i."""
    i = r.randrange(len(HOSTILE_PIECES))
    ev = [b": OPENROUTER PROCESSING\n\n", b"data: " + dumps(chunk_obj(model, {"role": "assistant", "content": ""})) + b"\n\n"]
    for j, p in enumerate(HOSTILE_PIECES):
        c = chunk_obj(model, {"role": "assistant", "content": p})
        data = dumps(c)
        if j == i:
            if cls == "unbalanced_json":
                data = r.choice([data[: len(data) - r.randint(1, 6)], data + b"}", data.replace(b"{", b"", 1), data[:-2] + b"]]"])
            elif cls == "invalid_utf8":
                at = data.index(p.encode()) + 1
                bad = r.choice([b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
                data = data[:at] + bad + data[at:]
            elif cls == "content_wrong_type":
                c["choices"][0]["delta"]["content"] = r.choice([42, ["x"], {"text": p}, True, 1.5])
                data = dumps(c)
        ev.append(b"data: " + data + b"\n\n")
    ev.append(b"data: " + dumps(chunk_obj(model, {"content": ""}, "stop")) + b"\n\n")
    ev.append(b"data: " + dumps(usage_obj(model, 5)) + b"\n\n")
    ev.append(b"data: [DONE]\n\n")
    return ev, i


def error_chunk(model, message, code):
    return {
        "id": "gen-abc123", "object": "chat.completion.chunk", "created": 1234567890, "model": model, "provider": "OpenAI",
        "error": {"code": code, "message": message, "metadata": {"error_type": "provider_unavailable"}},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }


def echo_prefix(r: random.Random, base: int) -> int:
    return r.choice([base, base, base, base - 1, base + 1, base - 5, base + 5, 0, 100, 400])


async def serve_hostile(rs: RunServer, conn: Conn, r: random.Random, headers: dict, streamed: bool):
    c = rs.case
    cls = c.cls
    auth = headers.get("authorization", "")
    mods = {m for m in ("keepalives", "bom", "odd_splits", "wrong_type_fields") if r.random() < 0.25}
    odd = "odd_splits" in mods or r.random() < 0.3

    if cls in ("keepalives", "bom", "odd_splits", "wrong_type_fields", "negative_usage", "trailing_noise", "finish_then_silence"):
        mods.add(cls)
        await conn.head(200, sse_headers())
        await send_split(conn, r, harmless_events(r, HOSTILE, HOSTILE_PIECES, mods), "odd_splits" in mods)
        if cls == "finish_then_silence":
            await conn.hang()
        else:
            await conn.end()
        return

    if cls == "endless_json_body":
        start = b'{"id":"gen-3","model":"' + HOSTILE.encode() + b'","choices":[{"index":0,"message":{"role":"assistant","content":"'
        v = r.randrange(3)
        if v == 0:
            await conn.head(200, json_headers())
        elif v == 1:
            await conn.head(200, json_headers() + [("connection", "close")], chunked=False)
        else:
            await conn.head(200, json_headers() + [("content-length", "99999999999")], chunked=False)
        await conn.body(start)
        await conn.flood(r.choice([b"a", b"\xc3\xa9", b"[", b"{\"a\":"]))
        return

    if cls in ("endless_sse_line", "endless_event"):
        await conn.head(200, sse_headers())
        await conn.body(b": OPENROUTER PROCESSING\n\n")
        if r.random() < 0.5:  # after a first token
            await conn.body(b"data: " + dumps(chunk_obj(HOSTILE, {"content": HOSTILE_PIECES[0]})) + b"\n\n")
        if cls == "endless_sse_line":
            await conn.body(b'data: {"choices":[{"delta":{"content":"')
            await conn.flood(r.choice([b"x", b"\xe2\x82\xac", b" "]))
        else:
            await conn.flood(r.choice([b"data: x\n", b'data: {"a":1}\n', b"data: \n", b"data:" + b"y" * 100 + b"\n"]))
        return

    if cls == "huge_retry_after":
        huge = r.choice(["999999999", "99999999999999", "18446744073709551616", "1e308", "-5", "NaN", "inf",
                         "Wed, 21 Oct 9999 07:28:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "0x7fffffff"])
        v = r.randrange(3)
        if v == 0:  # upstream pool / model limit with a huge Retry-After
            body = {"error": {"message": f"Rate limit exceeded: limit_rpm/{HOSTILE}", "code": 429}}
            hs = [("retry-after", huge)] + ([("retry-after-ms", r.choice(["99999999999999999", "-1", "1e300"]))] if r.random() < 0.5 else [])
        else:  # platform quota with a huge reset
            reset = r.choice(["99999999999999", "18446744073709551615", "-1", "1e308", huge])
            which = "free-models-per-day" if v == 1 else "free-models-per-min"
            body = {"error": {"message": f"Rate limit exceeded: {which}", "code": 429,
                              "metadata": {"headers": {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
                                           "limit_source": "openrouter_free_tier_daily" if v == 1 else None}}}
            hs = [("X-RateLimit-Limit", "50"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", reset)]
            if r.random() < 0.5:
                hs.append(("retry-after", huge))
        await conn.full(429, json_headers() + hs, dumps(body))
        return

    if cls == "auth_echo_plain":
        n = echo_prefix(r, 259)
        body = ("E" * n + "Authorization: " + auth + " was rejected").encode()
        hs = [("content-type", "text/plain")] + ([("x-echo-authorization", auth)] if r.random() < 0.5 else [])
        await conn.full(r.choice([400, 401, 403, 500, 502, 429]), hs, body)
        return

    if cls == "auth_echo_json":
        n = echo_prefix(r, 359)
        msg = "M" * n + " " + auth + " is not allowed"
        body = {"error": {"code": r.choice([400, 500, 502, 429]), "message": msg, "metadata": {"raw": msg if r.random() < 0.5 else None}}}
        await conn.full(r.choice([400, 401, 403, 500, 502, 429]), json_headers(), dumps(body))
        return

    if cls in ("unbalanced_json", "invalid_utf8", "content_wrong_type"):
        ev, _ = damaged_piece_events(r, HOSTILE, cls, c.key)
        await conn.head(200, sse_headers())
        await send_split(conn, r, b"".join(ev), odd)
        await conn.end()
        return

    if cls == "token_then_keepalives":
        await conn.head(200, sse_headers())
        await conn.body(b"data: " + dumps(chunk_obj(HOSTILE, {"role": "assistant", "content": HOSTILE_PIECES[0]})) + b"\n\n")
        await conn.hang(every=0.005, piece=r.choice([b": keep-alive\n\n", b": OPENROUTER PROCESSING\n\n", b"\n", b"data: " + dumps(chunk_obj(HOSTILE, {"content": ""})) + b"\n\n"]))
        return

    if cls == "drop_mid_stream":
        ev, i = damaged_piece_events(r, HOSTILE, "", c.key)
        cut = r.randint(2, 2 + len(HOSTILE_PIECES))  # after a content chunk, before the finish
        data = b"".join(ev[:cut])
        if r.random() < 0.5:
            data = data[: len(data) - r.randint(1, 20)]  # inside an event
        await conn.head(200, sse_headers())
        await send_split(conn, r, data, odd)
        raise Closed()  # drop without the chunked terminator

    if cls == "error_in_stream":
        ev, _ = damaged_piece_events(r, HOSTILE, "", c.key)
        k = r.randint(1, len(HOSTILE_PIECES) + 1)
        msg = "Provider disconnected mid-stream"
        if r.random() < 0.5:
            msg = "m" * echo_prefix(r, 359) + " " + auth
        code = r.choice([502, "server_error", 429, None])
        await conn.head(200, sse_headers())
        await send_split(conn, r, b"".join(ev[:k]) + b"data: " + dumps(error_chunk(HOSTILE, msg, code)) + b"\n\ndata: [DONE]\n\n", odd)
        await conn.end()
        return

    if cls == "429_upstream":
        body = {"error": {"message": "Provider returned error", "code": 429, "metadata": {
            "raw": f"{HOSTILE} is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations",
            "provider_name": "DeepInfra", "is_byok": False, "provider_error_code": "engine_overloaded",
            "limit_source": "upstream_provider_shared_pool"}}}
        hs = [("retry-after", str(r.randint(1, 60)))] if r.random() < 0.5 else []
        await conn.full(429, json_headers() + hs, dumps(body))
        return

    if cls == "429_quota":
        now_ms = int(time.time() * 1000)
        if r.random() < 0.5:
            reset = str(now_ms + r.randint(500, 60000))
            body = {"error": {"message": "Rate limit exceeded: free-models-per-min", "code": 429, "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}}}}
            hs = [("retry-after", str(r.randint(1, 60))), ("X-RateLimit-Limit", "20"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", reset)]
        else:
            reset = str((now_ms // 86_400_000 + 1) * 86_400_000)
            body = {"error": {"message": "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day", "code": 429, "metadata": {"headers": {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, "limit_source": "openrouter_free_tier_daily"}}}
            hs = [("X-RateLimit-Limit", "50"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", reset)]
        await conn.full(429, json_headers() + hs, dumps(body))
        return

    if cls == "5xx":
        status = r.choice([500, 502, 503, 504, 520, 524, 529])
        body = r.choice([dumps({"error": {"code": status, "message": "Internal Server Error"}}), b"<html><body>502 Bad Gateway</body></html>", b"", b"\x00\x01\x02"])
        ct = "application/json" if body.startswith(b"{") else "text/html"
        await conn.full(status, [("content-type", ct)], body)
        return

    if cls == "redirect":
        status = r.choice([301, 302, 307, 308])
        loc = r.choice([f"http://127.0.0.1:{rs.redirect_port}/api/v1/chat/completions", f"http://user:pass@127.0.0.1:{rs.redirect_port}/steal", f"//127.0.0.1:{rs.redirect_port}/api/v1/chat/completions"])
        await conn.full(status, [("location", loc), ("content-type", "text/plain")], b"moved")
        return

    if cls == "gzip_garbage":
        v = r.randrange(3)
        body = [bytes(r.randrange(256) for _ in range(r.randint(1, 4096))), gzip.compress(bytes(r.randrange(256) for _ in range(4096))), gzip_bomb()][v]
        if v == 0 and r.random() < 0.5:
            body = b"\x1f\x8b\x08\x00" + body  # a gzip magic, then garbage
        ct = r.choice(["text/event-stream", "application/json"])
        await conn.head(200, [("content-type", ct), ("content-encoding", r.choice(["gzip", "gzip", "br", "deflate"]))])
        await conn.body(body)
        await conn.end()
        return

    if cls == "garbage_status":
        v = r.randrange(5)
        if v == 0:
            await conn.raw(bytes(r.randrange(256) for _ in range(r.randint(1, 2048))))
        elif v == 1:
            await conn.raw(b"HTTP/1.1 banana\r\ncontent-type: text/event-stream\r\n\r\n")
        elif v == 2:
            await conn.raw(b"SSH-2.0-OpenSSH_9.6\r\n")
        elif v == 3:
            await conn.raw(b"HTTP/1.1 999999999999 WHAT\r\ncontent-length: 2\r\n\r\n{}")
        else:
            await conn.flood(b"GARBAGE")  # an endless status line
        raise Closed()

    if cls == "no_body":
        v = r.randrange(5)
        if v == 0:
            await conn.full(200, sse_headers(), b"")
        elif v == 1:
            await conn.full(200, json_headers(), b"")
        elif v == 2:
            await conn.head(200, sse_headers())
            await conn.end()
        elif v == 3:
            await conn.head(200, sse_headers() + [("connection", "close")], chunked=False)
            raise Closed()
        else:
            await conn.head(204, [], chunked=False)
        return

    if cls == "huge_header":
        v = r.randrange(3)
        lines = [b"HTTP/1.1 200 OK", b"content-type: text/event-stream", b"transfer-encoding: chunked"]
        if v == 0:
            lines.append(b"x-junk: " + b"a" * (r.randint(1, 16) << 20))
        elif v == 1:
            lines += [b"x-h%d: v" % i for i in range(r.randint(1000, 100000))]
        await conn.raw(b"\r\n".join(lines) + b"\r\n")
        if v == 2:
            await conn.flood(b"x-endless: header\r\n")
        await conn.raw(b"\r\n")
        conn.chunked = True
        await conn.body(b"".join(good_sse(HOSTILE, HOSTILE_PIECES)))
        await conn.end()
        return

    if cls == "endless_models":  # the chat is fine; the catalog is the hostile part
        await serve_good(conn, HOSTILE, HOSTILE_PIECES, streamed)
        return

    raise AssertionError(cls)


async def serve_good(conn: Conn, model, pieces, streamed):
    if streamed:
        await conn.head(200, sse_headers())
        await conn.body(b"".join(good_sse(model, pieces)))
        await conn.end()
    else:
        await conn.full(200, json_headers(), good_json(model, "".join(pieces)))


async def handle(rs: RunServer, reader, writer, redirect_target: bool):
    conn = Conn(reader, writer)
    seq = 0
    try:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            method, path, headers, body = req
            rs.requests.append(("redirect" if redirect_target else "main", method, path, headers))
            if redirect_target:
                if "authorization" in headers:
                    rs.redirect_hits.append((method, path, headers["authorization"]))
                await conn.full(200, json_headers(), good_json(HOSTILE, "STOLEN"))
                continue
            if method == "GET" and path.endswith("/models"):
                if rs.case.cls == "endless_models":
                    r = random.Random(f"models-{rs.case.seed}")
                    await conn.head(200, json_headers(), chunked=r.random() < 0.5)
                    await conn.body(b'{"data":[')
                    await conn.flood(dumps(json.loads(CATALOG)["data"][0]) + b",")
                    return
                await conn.full(200, json_headers(), CATALOG)
                continue
            if method == "POST" and path.endswith("/chat/completions"):
                try:
                    req_json = json.loads(body)
                except ValueError:
                    req_json = {}
                model = req_json.get("model")
                streamed = bool(req_json.get("stream"))
                if model == GOOD:
                    await serve_good(conn, GOOD, [GOOD_TEXT[:5], GOOD_TEXT[5:]], streamed)
                    continue
                if model == HOSTILE:
                    seq += 1
                    r = random.Random(f"{rs.case.seed}-{len(rs.requests)}")
                    await serve_hostile(rs, conn, r, headers, streamed)
                    continue
            await conn.full(404, json_headers(), dumps({"error": {"code": 404, "message": "not found"}}))
    except (Closed, ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.transport.abort()
        except Exception:
            pass


class Loop:
    """One asyncio loop in a thread; per run, a server and a redirect target on it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def start(self, case: Case) -> RunServer:
        rs = RunServer(case)

        async def go():
            def cb(target):
                async def f(reader, writer):
                    t = asyncio.current_task()
                    rs.tasks.add(t)
                    try:
                        await asyncio.wait_for(handle(rs, reader, writer, target), CONNECTION_LIMIT_S)
                    except (asyncio.TimeoutError, asyncio.CancelledError):
                        writer.transport.abort()
                    finally:
                        rs.tasks.discard(t)
                return f
            main = await asyncio.start_server(cb(False), "127.0.0.1", 0, limit=1 << 20)
            red = await asyncio.start_server(cb(True), "127.0.0.1", 0, limit=1 << 20)
            rs.servers = [main, red]
            rs.port = main.sockets[0].getsockname()[1]
            rs.redirect_port = red.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(go(), self.loop).result()
        return rs

    def stop(self, rs: RunServer):
        async def go():
            for s in rs.servers:
                s.close()
            for t in list(rs.tasks):
                t.cancel()
        asyncio.run_coroutine_threadsafe(go(), self.loop).result()


# ---- one run -------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    code: int = 0
    elapsed: float = 0.0
    rss: int = 0  # bytes
    stdout: bytes = b""
    stderr: bytes = b""
    killed: bool = False
    panic: bool = False
    overdue: bool = False
    wrong: str = ""  # why the exit-0 answer is wrong
    harmless_failed: bool = False
    leaks: list = field(default_factory=list)  # where a key fragment was found
    redirect_hits: int = 0
    requests: int = 0
    far_future: list = field(default_factory=list)
    later: bytes = b""  # the output of `freeroute stats` and `stats --json` in the same HOME


def scan_home(home: str, frags: list[bytes]) -> list[str]:
    found = []
    for dirpath, _, files in os.walk(home):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                with open(p, "rb") as fh:
                    data = fh.read(64 << 20)
            except OSError:
                continue
            for fr in frags:
                if fr in data:
                    found.append(os.path.relpath(p, home))
                    break
    return found


NUM = re.compile(rb"(?<![\w.])(\d{10,20})(?![\w.])")


def far_future_times(home: str) -> list[str]:
    """Numbers in state/cache files that read as epoch s or ms more than 2 days ahead."""
    now = time.time()
    out = []
    for dirpath, _, files in os.walk(home):
        for f in files:
            if not f.endswith((".json", ".jsonl")):
                continue
            try:
                data = open(os.path.join(dirpath, f), "rb").read(8 << 20)
            except OSError:
                continue
            for m in NUM.finditer(data):
                n = int(m.group(1))
                t = n / 1000 if n > 10**12 else n
                if now + 2 * 86400 < t < 10**15:
                    out.append(f"{f}:{m.group(1).decode()}")
    return out


# A child's ru_maxrss starts from its parent's RSS at the fork (Linux keeps the high-water
# mark across exec), so freeroute forked from this Python process would report Python's
# tens of MB. It is started by a small /bin/sh instead, which exits at once; this process is
# its subreaper, so freeroute becomes our child and os.wait4 gives its own rusage.
_SUBREAPER = False
_SPAWN_LOCK = threading.Lock()
# The background child waits for a line on the shell's stdin (kept as fd 4: an async list's
# stdin is /dev/null), sent once the shell has exited, so that the shell can never reap it
# first (taking its rusage with it).
LAUNCH = 'exec 4<&0; o=$1; e=$2; shift 2; unset PWD; { read _ <&4; exec "$@" </dev/null >"$o" 2>"$e" 4<&-; } & echo $!'


def become_subreaper():
    global _SUBREAPER
    if not _SUBREAPER:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        _SUBREAPER = True


def spawn(binary, args, env, cwd, out_path, err_path) -> int:
    with _SPAWN_LOCK:
        become_subreaper()
        go_r, go_w = os.pipe()
        try:
            sh = subprocess.Popen(["/bin/sh", "-c", LAUNCH, "sh", out_path, err_path, binary, *args], env=env, cwd=cwd,
                                  stdin=go_r, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            pid = int(sh.stdout.readline())
            sh.stdout.close()
            sh.wait()
            os.write(go_w, b"go\n")
        finally:
            os.close(go_r)
            os.close(go_w)
        return pid


def run_case(loop: Loop, binary: str, case: Case, keep: bool = False) -> Result:
    rs = loop.start(case)
    tmp = tempfile.mkdtemp(prefix=f"hostile-{case.seed}-")
    home = os.path.join(tmp, "home")
    try:
        cfg_dir = os.path.join(home, "config", "freeroute")
        os.makedirs(cfg_dir)
        for d in ("cache", "state", "data"):
            os.makedirs(os.path.join(home, d))
        with open(os.path.join(cfg_dir, "config.toml"), "w") as f:
            f.write(f'[providers.openrouter]\nbase_url = "http://127.0.0.1:{rs.port}/api/v1"\n')
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, "config"),
            "XDG_CACHE_HOME": os.path.join(home, "cache"),
            "XDG_STATE_HOME": os.path.join(home, "state"),
            "XDG_DATA_HOME": os.path.join(home, "data"),
            "FREEROUTE_DISCOVER": "0",
            "FREEROUTE_KEYLESS": "0",
            "NO_COLOR": "1",
            "OPENROUTER_API_KEY": case.key,
        }
        res = Result(case)
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        start = time.monotonic()
        pid = spawn(binary, case.args(), env, tmp, out_path, err_path)
        while True:
            got, status, ru = os.wait4(pid, os.WNOHANG)
            if got:
                break
            if time.monotonic() - start > HARD_KILL_S and not res.killed:
                os.kill(pid, signal.SIGKILL)
                res.killed = True
            time.sleep(0.005)
        res.elapsed = time.monotonic() - start
        res.code = os.waitstatus_to_exitcode(status)
        res.rss = ru.ru_maxrss * 1024
        loop.stop(rs)
        # What the run left behind must not show the key either when read back.
        for extra in (["stats"], ["stats", "--json"]):
            try:
                q = subprocess.run([binary, *extra], env=env, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
                res.later += q.stdout + q.stderr
            except subprocess.TimeoutExpired:
                res.later += b"(stats timed out)"
        res.stdout = open(out_path, "rb").read()
        res.stderr = open(err_path, "rb").read()
        res.redirect_hits = len(rs.redirect_hits)
        res.requests = len(rs.requests)
        judge(res, home)
        if keep:
            print(f"HOME kept: {home}", file=sys.stderr)
        return res
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def answered(r: Result) -> str | None:
    """The answer's text: stdout without its newline, or --json's content."""
    if r.case.mode == "json":
        try:
            return json.loads(r.stdout).get("content")
        except (ValueError, AttributeError):
            return None
    text = r.stdout.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\n") else None


def judge(res: Result, home: str):
    c = res.case
    res.panic = res.code in (101, 134) or (res.code < 0 and not res.killed) or b"panicked" in res.stderr
    res.overdue = res.killed or res.elapsed > TIMEOUT_S + GRACE_S
    if res.code == 0:
        if answered(res) not in c.expected():
            res.wrong = f"{'--json content' if c.mode == 'json' else 'stdout'} {answered(res) if c.mode == 'json' else res.stdout[:200]!r}"
    elif c.kind == "harmless":
        res.harmless_failed = True
    frags = fragments(c.key)
    res.leaks = scan_home(home, frags)
    for name, data in (("stdout", res.stdout), ("stderr", res.stderr), ("the output of `stats`", res.later)):
        if any(f in data for f in frags):
            res.leaks.append(name)
    res.far_future = far_future_times(home)


# ---- the whole run -------------------------------------------------------------------


def parse_seeds(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def failed(r: Result) -> bool:
    return r.panic or r.overdue or bool(r.wrong) or r.harmless_failed or bool(r.leaks) or r.redirect_hits > 0


def describe(r: Result) -> str:
    why = []
    if r.panic:
        why.append(f"panic (exit {r.code})")
    if r.overdue:
        why.append(f"overdue ({r.elapsed:.1f} s{', killed' if r.killed else ''})")
    if r.wrong:
        why.append(f"wrong answer with exit 0: {r.wrong[:160]}")
    if r.harmless_failed:
        why.append(f"harmless oddity failed with exit {r.code}")
    if r.leaks:
        why.append(f"key fragment in {', '.join(sorted(set(r.leaks)))}")
    if r.redirect_hits:
        why.append(f"{r.redirect_hits} request(s) with Authorization at the redirect target")
    return "; ".join(why)


def repro(r: Result) -> str:
    return f"python3 bench/hostile.py --seed {r.case.seed} -v"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-499", help="seeds, e.g. 0-499 or 1,5,9-12 (default 0-499)")
    ap.add_argument("--seed", type=int, help="one seed, with details (HOME kept with -v)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="runs at a time (default 2)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each run's outputs (and keep HOME)")
    a = ap.parse_args()
    binary = os.environ.get("FREEROUTE_BIN", "target/release/freeroute")
    if not os.access(binary, os.X_OK):
        print(f"hostile: no executable at {binary} (build with `cargo build --release` or set FREEROUTE_BIN)", file=sys.stderr)
        return 2
    binary = os.path.abspath(binary)
    gzip_bomb()  # made once here, not in the server's loop (it would stall every run's server)
    seeds = [a.seed] if a.seed is not None else parse_seeds(a.seeds)
    loop = Loop()
    t0 = time.monotonic()
    results: list[Result] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futs = [pool.submit(run_case, loop, binary, case_for(s), a.verbose) for s in seeds]
        for i, f in enumerate(concurrent.futures.as_completed(futs), 1):
            r = f.result()
            results.append(r)
            if a.verbose:
                c = r.case
                print(f"--- seed {c.seed}: {c.cls} ({c.kind}), mode {c.mode}, key {c.key}\n"
                      f"freeroute {' '.join(c.args())}\nexit {r.code} in {r.elapsed:.2f} s, RSS {r.rss / 1e6:.1f} MB, {r.requests} requests\n"
                      f"stdout: {r.stdout[:2000]!r}\nstderr: {r.stderr[:4000].decode('utf-8', 'replace')}\n"
                      f"verdict: {describe(r) or 'ok'}", file=sys.stderr)
            elif i % 25 == 0:
                print(f"hostile: {i}/{len(seeds)} runs, {time.monotonic() - t0:.0f} s", file=sys.stderr)
    wall = time.monotonic() - t0
    results.sort(key=lambda r: r.case.seed)
    report(results, wall, binary)
    bad = [r for r in results if failed(r)]
    return 1 if bad or max(r.rss for r in results) >= RSS_LIMIT else 0


def report(results: list[Result], wall: float, binary: str):
    rss = [r.rss for r in results]
    n = len(results)
    rev = subprocess.run(["git", "log", "-1", "--format=%h", "--", "src", "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"# hostile server: {n} runs, release build of src at {rev}, {wall:.0f} s wall, {os.cpu_count()} CPUs\n")
    rows = [
        ("panics (exit 101/134, a signal, or \"panicked\")", sum(r.panic for r in results), "0"),
        (f"runs over the deadline ({TIMEOUT_S:.0f} s + {GRACE_S:.0f} s)", sum(r.overdue for r in results), "0"),
        ("wrong answers with exit 0", sum(bool(r.wrong) for r in results), "0"),
        ("harmless oddities that failed (exit != 0)", sum(r.harmless_failed for r in results), "0"),
        ("runs with a key fragment under HOME, in stdout/stderr or in `stats`", sum(bool(r.leaks) for r in results), "0"),
        ("requests with Authorization at a redirect target", sum(r.redirect_hits for r in results), "0"),
        ("peak RSS, max", f"{max(rss) / 1e6:.1f} MB", "< 64 MB"),
        ("peak RSS, median", f"{statistics.median(rss) / 1e6:.1f} MB", ""),
    ]
    print("| measure | value | goal |\n|---|---:|---|")
    for name, v, goal in rows:
        ok = "" if not goal else (" ✗" if (goal == "0" and v != 0) or (goal.startswith("<") and max(rss) >= RSS_LIMIT) else "")
        print(f"| {name} | {v}{ok} | {goal} |")
    el = sorted(r.elapsed for r in results)
    print(f"\nWall time per run: median {statistics.median(el):.2f} s, max {el[-1]:.2f} s. "
          f"Times more than 2 days ahead left in state/cache files (informational): {sum(bool(r.far_future) for r in results)} runs.\n")
    print("| class | kind | runs | exit 0, HOSTILE's text / GOOD's | exit != 0 (code: runs) | failures | max RSS | max time |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for cls, (kind, _) in CLASSES.items():
        rs = [r for r in results if r.case.cls == cls]
        if not rs:
            continue
        codes = {}
        for r in rs:
            if r.code != 0:
                codes[r.code] = codes.get(r.code, 0) + 1
        ok0 = f"{sum(r.code == 0 and answered(r) == HOSTILE_TEXT for r in rs)} / {sum(r.code == 0 and answered(r) == GOOD_TEXT for r in rs)}"
        nz = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())) or "0"
        print(f"| {cls} | {kind} | {len(rs)} | {ok0} | {nz} | {sum(failed(r) for r in rs)} | "
              f"{max(r.rss for r in rs) / 1e6:.1f} MB | {max(r.elapsed for r in rs):.2f} s |")
    bad = [r for r in results if failed(r)]
    if bad:
        print(f"\nFailures ({len(bad)}):\n")
        for r in bad:
            c = r.case
            tail = " / ".join(r.stderr.decode("utf-8", "replace").strip().splitlines()[-3:])[:400].replace("`", "'")
            print(f"- seed {c.seed} ({c.cls}, {c.mode}{', -v' if c.verbose else ''}): {describe(r)}. Repro: `{repro(r)}`"
                  + (f"; stderr ends: `{tail}`" if tail else ""))
    far = [r for r in results if r.far_future]
    if far:
        print("\nFar-future times in state (informational):\n")
        for r in far[:10]:
            print(f"- seed {r.case.seed} ({r.case.cls}): {', '.join(r.far_future[:4])}")


if __name__ == "__main__":
    sys.exit(main())
