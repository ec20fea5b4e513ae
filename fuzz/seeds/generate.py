#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: fuzz/seeds/<target>/<name>, a handful of small,
meaningful inputs per target in the real formats (and in the input layout each target's header
describes), so that even a 10 s run starts from inputs that reach deep into each parser.

The seeds are committed; this script is how they were made. Run it from anywhere after changing
a target's input layout or a format, and commit the result: `python3 fuzz/seeds/generate.py`.
`cargo xtask fuzz` replays every seed before fuzzing and starts libFuzzer from them, writing
what it finds to a scratch corpus under fuzz/target/ (never here).
"""

import base64
import hashlib
import json
import pathlib
import shutil

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def sse(*events):
    """An SSE stream: each event is (event name or None, JSON data or a raw string)."""
    out = []
    for name, data in events:
        if name:
            out.append(f"event: {name}\n")
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        out.append(f"data: {text}\n\n")
    return "".join(out).encode()


def usage_scanner():
    # Byte 0: format (0 OpenAI, 1 Anthropic, 2 Gemini) | 0x80 for SSE; byte 1: SSE cap / 8;
    # byte 2: JSON cap / 16; byte 3: number of chunk lengths - 1; then the lengths; the body.
    def seed(fmt, is_sse, body, sse_cap=255, json_cap=255, lengths=(7, 1, 64)):
        control = fmt | (0x80 if is_sse else 0)
        header = bytes([control, sse_cap, json_cap, len(lengths) - 1, *lengths])
        return header + body

    openai_stream = sse(
        (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], "usage": None}),
        (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}], "usage": None}),
        (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}),
        (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}),
        (None, "[DONE]"),
    )
    responses_stream = sse(
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": {"id": "r1", "status": "in_progress", "usage": None}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m1", "output_index": 0, "content_index": 0, "delta": "Hi"}),
        ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": {"id": "r1", "status": "completed", "usage": {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10}}}),
    )
    anthropic_stream = sse(
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude", "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "usage"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    )
    gemini_stream = sse(
        (None, {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}], "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}),
        (None, {"candidates": [{"content": {"parts": [{"text": "lo"}], "role": "model"}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 4, "thoughtsTokenCount": 2, "totalTokenCount": 14}}),
    )
    openai_reply = json.dumps({"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}).encode()
    anthropic_reply = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hi"}], "usage": {"input_tokens": 10, "output_tokens": 2}}).encode()
    gemini_array = json.dumps([{"usageMetadata": {"promptTokenCount": 8}}, {"usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 6, "thoughtsTokenCount": 2}}]).encode()
    # CRLF line ends, an event split over two data lines, and a line longer than a small cap.
    crlf = b'data: {"choices":[],\r\ndata: "usage":{"prompt_tokens":3,"completion_tokens":9}}\r\n\r\n'
    long_line = b"data: " + b"x" * 200 + b'\n\ndata: {"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    # Cache tokens in each format (issue 22): inside the prompt for OpenAI and Gemini, beside it
    # for Anthropic.
    openai_cached = json.dumps({"id": "c2", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306, "prompt_tokens_details": {"cached_tokens": 1920}}}).encode()
    responses_cached = json.dumps({"object": "response", "usage": {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096}, "output_tokens": 6}}).encode()
    anthropic_cached = sse(
        ("message_start", {"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 10, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 2000, "output_tokens": 1}}}),
        ("message_delta", {"type": "message_delta", "usage": {"input_tokens": 10, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 2000, "output_tokens": 15}}),
    )
    gemini_cached = json.dumps({"candidates": [], "usageMetadata": {"promptTokenCount": 3000, "cachedContentTokenCount": 2048, "candidatesTokenCount": 40}}).encode()
    return {
        "openai-cached-reply": seed(0, False, openai_cached),
        "openai-responses-cached-reply": seed(0, False, responses_cached, lengths=(5,)),
        "anthropic-cached-stream": seed(1, True, anthropic_cached, lengths=(33, 1)),
        "gemini-cached-reply": seed(2, False, gemini_cached),
        "openai-chat-stream": seed(0, True, openai_stream),
        "openai-responses-stream": seed(0, True, responses_stream, lengths=(13,)),
        "anthropic-stream": seed(1, True, anthropic_stream, lengths=(100, 3)),
        "gemini-stream": seed(2, True, gemini_stream, lengths=(0, 5)),
        "openai-reply": seed(0, False, openai_reply),
        "anthropic-reply": seed(1, False, anthropic_reply, lengths=(2,)),
        "gemini-array": seed(2, False, gemini_array),
        "openai-crlf-multiline": seed(0, True, crlf, lengths=(1,)),
        "openai-line-past-small-cap": seed(0, True, long_line, sse_cap=16, lengths=(50, 9)),
        "openai-body-past-small-cap": seed(0, False, openai_reply, json_cap=4),
    }


def usage_stripper():
    # Byte 0: the event cap / 8; byte 1: number of chunk lengths - 1; then the lengths; the
    # stream.
    def seed(stream, cap=255, lengths=(7, 1, 64)):
        return bytes([cap, len(lengths) - 1, *lengths]) + stream

    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    asked = sse(
        (None, {**chunk, "usage": None}),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}),
        (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}),
        (None, "[DONE]"),
    )
    unasked = sse((None, chunk), (None, "[DONE]"))
    # Azure's first chunk: no choices, `"usage": null` only.
    azure = sse((None, {"choices": [], "prompt_filter_results": [], "usage": None}), (None, chunk))
    crlf = b'data: {"usage":null, "choices":[]}\r\n\r\nid: 1\r\ndata: {"choices":[ ],"usage":{"prompt_tokens":1}}\r\n\r\n'
    long_event = b'data: {"usage":null,"pad":"' + b"x" * 200 + b'"}\n\n' + asked
    odd = b'data: {"a":"\\"usage\\"","usage":null}\n\ndata: {"usage":null,"usage":null}\n\ndata: {"x":1,\ndata: "usage":null}\n\n: usage\n\ndata: {"usage":null'
    return {
        "asked-stream": seed(asked),
        "unasked-stream": seed(unasked, lengths=(13,)),
        "azure-first-chunk": seed(azure, lengths=(0, 5)),
        "crlf-and-fields": seed(crlf, lengths=(1,)),
        "event-past-small-cap": seed(long_event, cap=16, lengths=(100, 3)),
        "escapes-duplicates-multiline-cut": seed(odd, lengths=(2,)),
    }


def config_yaml():
    minimal = """server:
  host: "127.0.0.1"
  port: 8000
auth:
  api_keys: ["client-key-0123456789abcdef"]
providers:
  demo: {type: mock, latency: 20ms}
"""
    several = """server:
  host: "::1"
  port: 8000
  shutdown_timeout: 5m
  limits: {upstream_first_byte_timeout: 1h, max_body_bytes: 1024}
auth:
  api_keys: ["${CLIPROXY_CLIENT_KEY}"]
providers:
  claude: {type: claude, base_url: "https://api.anthropic.com/", models: ["claude-*"]}
  local: {type: openai, base_url: "http://127.0.0.1:11434/v1", models: [llama3]}
  demo: {type: mock, latency: 20ms}
logging: {level: debug, format: text}
"""
    return {
        "example": (ROOT / "deploy/config.example.yaml").read_bytes(),
        "hardened": (ROOT / "deploy/config.hardened.yaml").read_bytes(),
        "minimal": minimal.encode(),
        "providers-and-limits": several.encode(),
        "unknown-key": b"server:\n  limits:\n    bogus: 1\n",
        "cors": b'server:\n  cors: {allowed_origins: ["https://app.example.com", "http://[::1]:3000"], max_age: 5m}\n',
    }


def credential_file():
    v1 = {"format": "cliproxy-credential", "version": 1, "id": "x", "provider": "openai", "type": "api_key", "token": "sk-fuzz-seed", "base_url": None, "label": None, "created_at": 1763769600}
    oauth = {"format": "cliproxy-credential", "version": 1, "id": "x", "provider": "claude", "type": "oauth", "token": "at-0123456789abcdef", "refresh_token": "rt-0123456789abcdef", "expires_at": 1763773200, "token_url": "https://auth.example.com/token", "client_id": "cliproxy", "label": "work", "created_at": 1763769600}
    v2 = {"format": "cliproxy-credential", "version": 2, "id": "x", "key_id": "0123456789abcdef", "nonce": base64.b64encode(bytes(range(12))).decode(), "ciphertext": base64.b64encode(bytes(range(48))).decode()}
    return {
        "v1-api-key": json.dumps(v1, indent=2).encode(),
        "v1-oauth": json.dumps(oauth).encode(),
        "v2-sealed": json.dumps(v2).encode(),
        "wrong-id": json.dumps({**v1, "id": "y"}).encode(),
        "version-3": json.dumps({**v1, "version": 3}).encode(),
    }


def upstream_error_body():
    # Byte 0: provider type (0 OpenAI, 1 Claude, 2 Gemini, 3 mock); byte 1: status index
    # (0: 400, 1: 401, 2: 402, 3: 403, 4: 429); then the body.
    def seed(kind, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        return bytes([kind, status]) + data

    return {
        "openai-invalid-api-key": seed(0, 1, {"error": {"message": "Incorrect API key provided: sk-****", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}),
        "openai-insufficient-quota": seed(0, 4, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}),
        "openai-missing-scopes": seed(0, 1, {"error": {"message": "You have insufficient permissions for this operation. Missing scopes: model.request.", "type": "invalid_request_error", "param": None, "code": None}}),
        "anthropic-authentication": seed(1, 1, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        "anthropic-credit": seed(1, 0, {"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit balance is too low to access the Anthropic API."}}),
        "anthropic-permission": seed(1, 3, {"type": "error", "error": {"type": "permission_error", "message": "Your API key does not have permission to use the specified resource."}}),
        "gemini-key-invalid": seed(2, 0, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
        "gemini-array-permission": seed(2, 3, [{"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}}]),
        "mock-rate-limited": seed(3, 4, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
        "html-page": seed(0, 3, b"<html><body><h1>403 Forbidden</h1></body></html>"),
        "nested": seed(3, 0, b'{"a":' * 150 + b'{"error":{"code":"invalid_api_key"}}' + b"}" * 150),
        # For the message shown to clients (`upstream_message`): the planted credential of the
        # target, an organisation id, terminal escapes and a bidi override.
        "openai-hostile-message": seed(0, 4, {"error": {"message": "Rate limit for org-Abc123 \u001b[2J\u202eKey planted-fuzz-credential-0123456789 \u200bok", "type": "requests", "code": "rate_limit_exceeded"}}),
        "anthropic-rate-limited": seed(1, 4, {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}),
        "gemini-rate-limited": seed(2, 4, {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}),
    }


def model_list():
    # Byte 0: provider type (0 OpenAI, 1 Claude, 2 Gemini, 3 mock); then the body.
    def seed(kind, body):
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        return bytes([kind]) + data

    return {
        "openai": seed(0, {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "system"}, {"id": "ft:gpt-4o:org::x1"}]}),
        "anthropic-first-page": seed(1, {"data": [{"type": "model", "id": "claude-sonnet-4", "display_name": "Claude Sonnet 4", "created_at": "2025-05-14T00:00:00Z"}], "has_more": True, "first_id": "claude-sonnet-4", "last_id": "claude-sonnet-4"}),
        "gemini-first-page": seed(2, {"models": [{"name": "models/gemini-2.5-pro", "displayName": "Gemini 2.5 Pro"}, {"name": "tunedModels/x"}], "nextPageToken": "abc/="}),
        "hostile-names": seed(0, {"data": [{"id": ""}, {"id": 7}, {"id": "gpt-*"}, {"id": "bad name"}, {"id": "ctl\u0007"}, {"id": "a" * 300}]}),
        "not-a-list": seed(2, {"models": {"name": "models/x"}}),
        "nested": seed(1, b'{"data":' + b"[" * 200 + b"]" * 200 + b"}"),
    }


def oauth_token_response():
    # Byte 0: the status is 100 + 2 * byte (50 is 200, 150 is 400, 200 is 500).
    ok = {"access_token": "at-0123456789abcdef", "refresh_token": "rt-0123456789abcdef", "expires_in": 3600, "token_type": "Bearer"}
    return {
        "200-full": bytes([50]) + json.dumps(ok).encode(),
        "200-access-only": bytes([50]) + b'{"access_token":"at-0123456789abcdef"}',
        "200-expires-as-string": bytes([50]) + json.dumps({**ok, "expires_in": "3600"}).encode(),
        "200-not-bearer": bytes([50]) + json.dumps({**ok, "token_type": "mac"}).encode(),
        "400-invalid-grant": bytes([150]) + b'{"error":"invalid_grant","error_description":"expired"}',
        "500-html": bytes([200]) + b"<html><body>Internal Server Error</body></html>",
    }


def forwarded_headers():
    # Byte 0: bit 0 picks Forwarded over X-Forwarded-For, bit 1 an IPv4-mapped peer; then one
    # header value per line.
    return {
        "xff-chain": b"\x00" + b"203.0.113.7, 10.0.0.2, 127.0.0.1",
        "xff-two-headers": b"\x02" + b"198.51.100.1\n10.1.1.1, 10.0.0.9",
        "xff-ipv6-and-mapped": b"\x00" + b"2001:db8::1, ::ffff:10.0.0.3",
        "forwarded-quoted-ipv6": b"\x01" + b'for="[2001:db8::17]:4711";proto=https, for=10.0.0.2',
        "forwarded-obfuscated": b"\x03" + b"for=_hidden;by=10.0.0.1, for=unknown",
        "deny-entry-cidr": b"\x00" + b"192.0.2.0/24",
    }


def ip_cidr():
    return {
        "ipv4": b"192.0.2.1\n10.0.0.0/8\n0.0.0.0/0\n",
        "ipv6": b"2001:db8::/32\n::1\nfe80::1\n::/0\n",
        "mapped": b"::ffff:10.0.0.0/104\n::ffff:192.0.2.1\n",
        "host-bits-set": b"10.1.2.3/8\n2001:db8::1/64\n",
        "garbage": b"10.0.0.0/33\nfe80::1%eth0\n256.1.1.1\n 10.0.0.1\n",
    }


def request_validation():
    # Byte 0: bit 7 turns validation off, bits 0-6 give max_tokens (x16 + 1; from 0x78 on, no
    # cap) and pick the kind (byte % 6: chat, responses, embeddings, messages, count_tokens,
    # gemini).
    def seed(kind, body, max_tokens_step=64):
        control = max_tokens_step & 0x7F
        control -= control % 6
        control += kind
        return bytes([control]) + json.dumps(body).encode()

    # json.dumps cannot write a key twice or an escaped key: these bodies are written as text.
    def raw(kind, text, max_tokens_step=64):
        return seed(kind, None, max_tokens_step)[:1] + text.encode()

    return {
        "chat": seed(0, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": True, "stream_options": {"include_usage": True}}),
        "responses": seed(1, {"model": "gpt-4o", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 64}),
        "embeddings": seed(2, {"model": "text-embedding-3-small", "input": ["a", "b"]}),
        "messages": seed(3, {"model": "claude-sonnet", "max_tokens": 1024, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": True}),
        "count-tokens": seed(4, {"model": "claude-sonnet", "messages": [{"role": "user", "content": "hi"}]}),
        "gemini": seed(5, {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 200}}),
        "no-cap-claude-code": seed(3, {"model": "claude-sonnet", "max_tokens": 64000, "messages": [{"role": "user", "content": "hi"}]}, max_tokens_step=0x78),
        "over-the-cap": seed(0, {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 999999}, max_tokens_step=1),
        # Every spelling of Gemini's token limit (Google reads proto and JSON names alike).
        "gemini-snake-config": seed(5, {"contents": [{"parts": [{"text": "hi"}]}], "generation_config": {"max_output_tokens": 200}}),
        "gemini-snake-field": seed(5, {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"max_output_tokens": 99999}}, max_tokens_step=1),
        "gemini-both-fields": seed(5, {"contents": [{"parts": [{"text": "hi"}]}], "generation_config": {"maxOutputTokens": 1, "max_output_tokens": None}}),
        "gemini-both-configs": seed(5, {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 5}, "generation_config": {"maxOutputTokens": 5}}),
        "chat-both-fields": seed(0, {"model": "m", "messages": [{"role": "user"}], "max_tokens": 1, "max_completion_tokens": 4000}),
        # `stream_options` that does not ask for usage, and one whose key is escaped.
        "chat-usage-not-asked": seed(0, {"model": "m", "messages": [{"role": "user"}], "stream": True, "stream_options": {"include_usage": False, "x": [None]}}),
        "chat-usage-escaped": raw(0, '{"model": "m", "messages": [{"role": "user"}], "stream_options": {"include\\u005fusage": true}}'),
        # A key given twice: at the top, in a message, in an array of objects, and equal only
        # once unescaped.
        "repeated-top": raw(0, '{"model": "m", "max_tokens": 99999, "max_tokens": 1, "messages": [{"role": "user"}]}'),
        "repeated-message": raw(3, '{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "a", "content": "b"}]}'),
        "repeated-in-array": raw(1, '{"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "type": "x"}]}]}'),
        "repeated-escaped": raw(0, '{"model": "m", "max_tokens": 99999, "max\\u005ftokens": 1, "messages": [{"role": "user"}]}'),
        "repeated-gemini": raw(5, '{"contents": [{"parts": []}], "generationConfig": {"maxOutputTokens": 9, "maxOutputTokens": 1}}'),
        "many-keys": raw(2, "{" + ", ".join(f'"k{i}": {i}' for i in range(40)) + ', "k7": 0, "input": "x"}'),
    }


def audit_verify():
    # Mode 0 (first byte not 1, 2 or 3): any file. Mode 1: [1, hi, lo, byte]: one byte of a
    # valid three-line chain changed. Modes 2 and 3: the same with the target's public key.
    def chain(lines):
        prev = "0" * 64
        out = b""
        for seq, (event, ip, result) in enumerate(lines, start=1):
            prefix = (
                f'{{"seq":{seq},"timestamp":"2026-01-01T00:00:00.000Z","event_type":"{event}",'
                f'"provider":null,"user_id":"alice","ip":"{ip}","result":"{result}",'
                f'"request_id":null,"details":{{}},"prev_hash":"{prev}"'
            )
            digest = hashlib.sha256(prefix.encode()).hexdigest()
            out += f'{prefix},"hash":"{digest}"}}\n'.encode()
            prev = digest
        return out

    def checkpointed(signature):
        # A start checkpoint (signed or not, as given) and one event, chained.
        prev = "0" * 64
        prefix = (
            '{"seq":1,"timestamp":"2026-01-01T00:00:00.000Z","event_type":"audit_checkpoint",'
            '"provider":null,"user_id":null,"ip":null,"result":"start","request_id":null,'
            f'"details":{{"head_seq":0,"head_hash":"{prev}","every_lines":1000,"every_secs":300,'
            f'"signature":"{signature}"}},"prev_hash":"{prev}"'
        )
        digest = hashlib.sha256(prefix.encode()).hexdigest()
        return f'{prefix},"hash":"{digest}"}}\n'.encode()

    valid = chain([("auth_success", "10.0.0.1", "success"), ("auth_failure", "10.0.0.2", "failure"), ("auth_success", "10.0.0.1", "success")])
    return {
        "valid-chain": valid,
        "torn-last-line": valid[:-40],
        "empty": b"",
        "one-byte-changed": bytes([1, 0, 40, ord("X")]),
        "final-newline-changed": bytes([1, 0xFF, 0xFF, ord(" ")]),
        # Mode 2: [2, file...] verified with the target's fixed public key: checkpoint lines
        # with a bad signature, an oversized signature, a wrong head.
        "signed-bad-signature": bytes([2]) + checkpointed("ab" * 64),
        "signed-oversized-signature": bytes([2]) + checkpointed("ab" * 5000),
        "signed-no-checkpoint": bytes([2]) + valid,
        # Mode 3: [3, hi, lo, byte]: one byte of the target's valid signed chain changed.
        "signed-one-byte-changed": bytes([3, 0, 200, ord("X")]),
        "signed-final-newline-changed": bytes([3, 0xFF, 0xFF, ord(" ")]),
    }


def fixtures(pattern):
    """The golden fixtures of the translation (tests/fixtures/translate/<case>/<file>), by
    case and file name: real-shaped requests, replies, errors and streams of every format."""
    root = ROOT / "tests" / "fixtures" / "translate"
    return {f"{p.parent.name}-{p.name}": p.read_bytes() for p in sorted(root.glob(f"*/{pattern}"))}


def translate_request():
    # Byte 0: the error status (400 + byte % 200; 0 is 400, 29 is 429, 100 is 500); then the
    # body, tried as a request, a reply and an error of every format. The fixtures' requests of
    # a few cases that reach far (tools and results, thinking, images, structured output), the
    # replies and the errors.
    seeds = {}
    cases = ("tool_result", "thinking", "image", "structured_output", "sampling", "stop_sequences")
    for name, body in fixtures("request.*.json").items():
        if name.startswith(cases):
            seeds[name] = bytes([0]) + body
    for name, body in fixtures("reply.*.json").items():
        if name.startswith(("tool_calls_parallel", "thinking", "max_tokens_hit", "usage_cache_tokens")):
            seeds[name] = bytes([0]) + body
    for name, body in fixtures("error.*.json").items():
        status = int(name.rsplit(".", 2)[1])
        seeds[name] = bytes([status - 400]) + body
    seeds["not-json"] = bytes([100]) + b"<html><body>502 Bad Gateway</body></html>"
    seeds["nested"] = bytes([0]) + b'{"messages":' + b"[" * 200 + b"]" * 200 + b"}"
    seeds["wrong-types"] = bytes([0]) + json.dumps({"model": 7, "messages": [{"role": "user", "content": [{"type": "image", "source": None}]}], "contents": "x", "input": {"a": 1}}).encode()
    return seeds


def translate_stream():
    # The provider's stream as bytes: every fixture stream (tools, thinking, errors mid-stream,
    # a reply cut by the token limit), and streams that skip steps.
    seeds = {}
    for name, body in fixtures("stream.*.sse").items():
        if name.startswith(("tool_calls_parallel", "thinking", "max_tokens_hit", "upstream_error", "usage_cache_tokens", "stop_sequences")):
            seeds[name] = body
    # Anthropic without message_start before a tool_use block (CLIProxyAPI #561), a delta for a
    # block never opened, and no message_stop.
    seeds["anthropic-skips-steps"] = sse(
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "late"}}),
    )
    # OpenAI Chat: a tool call whose arguments arrive before its id and name, CRLF line ends.
    seeds["chat-out-of-order-crlf"] = sse(
        (None, {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}}]}),
        (None, {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_1", "type": "function", "function": {"name": "f"}}]}, "finish_reason": "tool_calls"}]}),
        (None, "[DONE]"),
    ).replace(b"\n", b"\r\n")
    # Responses: a delta for an item never added, an unknown event, a second completion.
    seeds["responses-unknown-and-orphans"] = sse(
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 0, "item_id": "m", "output_index": 4, "content_index": 0, "delta": "x"}),
        ("response.something_new", {"type": "response.something_new", "sequence_number": 1}),
        ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": {"id": "r", "status": "completed", "output": []}}),
        ("response.completed", {"type": "response.completed", "sequence_number": 3, "response": {"id": "r", "status": "completed", "output": []}}),
    )
    # Gemini: a thought with its signature, then an empty candidate list and a chunk that is an
    # array (the non-SSE framing).
    seeds["gemini-odd-chunks"] = sse(
        (None, {"candidates": [{"content": {"parts": [{"text": "hm", "thought": True, "thoughtSignature": "c2ln"}], "role": "model"}}]}),
        (None, {"candidates": []}),
        (None, [{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"x": [1]}}}]}, "finishReason": "STOP"}]}]),
    )
    return seeds


def usage_query():
    # Byte 0: the retention in days, minus one; then the query string.
    return {
        "default": b"\x59",
        "all-parameters": b"\x59" + b"from=7d&to=2027-01-15T07:30:00Z&by=model&bucket=day",
        "encoded-time": b"\x59" + b"from=2027-01-15T05%3A10%3A00Z&by=provider",
        "repeated": b"\x59" + b"by=key&by=model",
        "unknown": b"\x59" + b"limit=5&from=1h",
        "past-retention": b"\x00" + b"from=3d",
        "inverted": b"\x59" + b"from=1h&to=2h",
        "bad-percent": b"\x59" + b"from=%ZZ&to=%ff%fe",
    }


def client_key_body():
    # Byte 0: even for POST /client-keys, odd for PATCH /client-keys/{name}; then the body.
    post, patch = b"\x00", b"\x01"
    return {
        "create-minimal": post + b'{"name": "ci"}',
        "create-all": post + json.dumps({
            "name": "team-a", "models": ["gpt-4o*", "claude-*"],
            "rate_limit": {"requests_per_minute": 60, "tokens_per_minute": 100000},
            "quota": {"limit": 5000000, "reset": "weekly"},
            "budget": {"usd": "0.01", "period": "daily"},
            "expires_at": "2030-01-31T00:00:00Z", "disabled": False,
        }).encode(),
        "create-budget-number": post + b'{"name": "n", "budget": {"usd": 2.5, "period": "monthly"}}',
        "create-key-as-name": post + b'{"name": "cpk-0123456789abcdef0123456789abcdef0123456789abcdef"}',
        "create-past-expiry": post + b'{"name": "old", "expires_at": "2001-01-01T00:00:00Z"}',
        "create-unknown": post + b'{"name": "x", "modles": []}',
        "create-not-object": post + b'["name"]',
        "create-truncated": post + b'{"name": "x", "budget": {"usd": ',
        "patch-clear": patch + b'{"models": null, "rate_limit": null, "quota": null, "budget": null, "expires_at": null}',
        "patch-disable": patch + b'{"disabled": true}',
        "patch-rename": patch + b'{"name": "other"}',
        "patch-bad-budget": patch + b'{"budget": {"usd": "-1", "period": "daily"}}',
        "patch-control": patch + b'{"models": ["a\\nb"]}',
    }


def redis_state_values():
    # Byte 0 picks the parser (0 quota, 1 denylist, 2 bans, 3 cool-downs, 4 client keys,
    # 5 usage history, 6 audit head, 7 change message); then field, a 0 byte, value.
    def seed(table, field, value):
        return bytes([table]) + field + b"\x00" + value
    digest = "ab" * 32
    return {
        "quota": seed(0, b"client:daily:team", json.dumps({"scope": "client", "name": "team", "period": "daily", "period_start": 1800000000, "tokens": 42}).encode()),
        "quota-unknown-scope": seed(0, b"x", b'{"scope": "planet", "name": "a", "period": "daily", "period_start": 0, "tokens": 1}'),
        "deny": seed(1, b"203.0.113.0/24", b'{"reason": "abuse", "created_at": 1, "expires_at": null}'),
        "deny-bad-network": seed(1, b"203.0.113.7/33", b'{"reason": "x", "created_at": 1}'),
        "ban": seed(2, b"::ffff:10.0.0.1", b'{"until": 1800000000}'),
        "cooldown": seed(3, b'["oa","cred-1",null]', b"1800000000000"),
        "cooldown-model": seed(3, b'["oa","cred-1","gpt-4o"]', b"-5"),
        "client-key": seed(4, b"k1", json.dumps({"digest": digest, "record": "{\"v\":1}"}).encode()),
        "client-key-bad-digest": seed(4, b"k1", b'{"digest": "XYZ", "record": "{}"}'),
        "usage": seed(5, b'["team","oa","gpt-4o","requests"]', b"12"),
        "usage-unknown-counter": seed(5, b'["team","oa","gpt-4o","apples"]', b"1"),
        "usage-not-utf8": seed(5, b'["\xff","oa","m","requests"]', b"\xfe"),
        "audit-head": seed(6, b"", json.dumps({"seq": 7, "hash": "00" * 32}).encode()),
        "message": seed(7, b"me", b"other client_keys"),
        "message-own": seed(7, b"me", b"me denylist"),
        "message-garbage": seed(7, b"me", b"\x00\x01 no"),
    }


TARGETS = {
    "redis_state_values": redis_state_values,
    "client_key_body": client_key_body,
    "usage_scanner": usage_scanner,
    "usage_query": usage_query,
    "usage_stripper": usage_stripper,
    "config_yaml": config_yaml,
    "credential_file": credential_file,
    "oauth_token_response": oauth_token_response,
    "forwarded_headers": forwarded_headers,
    "ip_cidr": ip_cidr,
    "request_validation": request_validation,
    "audit_verify": audit_verify,
    "upstream_error_body": upstream_error_body,
    "model_list": model_list,
    "translate_request": translate_request,
    "translate_stream": translate_stream,
}


def main():
    targets = sorted(p.stem for p in (HERE.parent / "fuzz_targets").glob("*.rs"))
    missing = sorted(set(targets) - set(TARGETS))
    if missing:
        raise SystemExit(f"no seeds for the fuzz targets {missing}: add them to generate.py")
    for target, make in TARGETS.items():
        out = HERE / target
        if out.exists():
            shutil.rmtree(out)
        out.mkdir()
        for name, data in make().items():
            (out / name).write_bytes(data)
        print(f"fuzz/seeds/{target}: {len(list(out.iterdir()))} seeds")


if __name__ == "__main__":
    main()
