"""Drives cliproxy's mocks with the official OpenAI, Anthropic and Google GenAI SDKs.

Usage: check.py DEMO_BASE_URL DEMO_CLIENT_KEY FIXTURE_URL [GATEWAY_URL GATEWAY_CLIENT_KEY
       [MANAGEMENT_KEY SERVER_BINARY CONFIG LOG_FILES]]

- DEMO_BASE_URL, DEMO_CLIENT_KEY: a running `cliproxy-server demo` (it prints both). Its
  built-in `mock` provider answers in-process, so it is reached through the gateway.
- FIXTURE_URL: the e2e suite's canned upstream replies (`tests/src/bin/fixture_upstream.rs`),
  reached directly: the SDKs read the fixtures the e2e tests feed the gateway.
- GATEWAY_URL, GATEWAY_CLIENT_KEY: a `cliproxy-server serve` whose OpenAI, Anthropic and
  Gemini providers are FIXTURE_URL: the same checks through the gateway's upstream path, its
  header and query allow-lists included.
- MANAGEMENT_KEY, SERVER_BINARY, CONFIG, LOG_FILES: that gateway's management key, its binary
  and config file (for the offline `cliproxy-server usage`), and its log files, `:`-separated:
  a client key is created at run time, used with the SDKs, found in the usage history with the
  tokens the SDKs reported and the cost the documented prices give, revoked, and looked for in
  the logs.

Only base_url and api_key differ from talking to the real providers. Each check rebuilds the
text, finish reason and usage with the SDK's own stream helper and compares them with what the
mock is known to send; the event sequences are compared with the real APIs' (the SDK helpers
accept some departures silently, so the order is checked here). Prints one line per check and
exits non-zero at the first failure.
"""

import base64
import datetime
import json
import math
import os
import struct
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

import anthropic
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

TIMEOUT = 20.0
PROMPT = "Say hello"

# The built-in mock's fixed reply (`reply_text` in crates/cliproxy-gateway/src/mock.rs), streamed
# one word at a time, with one output token per streamed piece.
MOCK_MODEL = "mock-1"
# The names a `mock-*` provider lists (`MODEL_NAMES` in mock.rs).
MOCK_MODELS = ["mock-1", "mock-embedding", "mock-fast"]
MOCK_TEXT = ("Hello from the cliproxy mock provider. This deterministic reply for model {model} "
             "travelled through the gateway's whole request path.")

# The e2e fixtures (`canned` in tests/src/lib.rs) as `fixture_upstream` serves them: the text
# of its WORDS and each format's fixed usage (input, output).
FIXTURE_TEXT = "Hello from the fixture upstream"
FIXTURE_USAGE = {"openai": (17, 9), "responses": (19, 8), "anthropic": (21, 11), "gemini": (13, 7)}
FIXTURE_EMBEDDING = [0.25, -0.5, 0.125]
FIXTURE_COUNTED_TOKENS = 21
# The model the legacy completions fixture answers as, and its usage (input, output).
FIXTURE_INSTRUCT = "gpt-3.5-turbo-instruct"
FIXTURE_COMPLETION_USAGE = (11, 6)

RESPONSES_EVENTS_BEFORE = ["response.created", "response.in_progress",
                           "response.output_item.added", "response.content_part.added"]
RESPONSES_EVENTS_AFTER = ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]


def ok(what: str, detail: str) -> None:
    print(f"ok {what}: {detail}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def check_usage(what: str, got: tuple, want: tuple) -> None:
    """`want` is (input, output); an input of None means "any positive count" (the mock derives
    it from the size of the request body the SDK wrote)."""
    good = all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in got)
    good = good and (want[0] is None or got[0] == want[0]) and got[1] == want[1]
    check(good, f"{what}: usage {got}, expected {want}")


def check_chat(what: str, client: openai.OpenAI, model: str, text: str, usage: tuple) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    reply = client.chat.completions.create(model=model, messages=messages)
    check(reply.choices[0].message.content == text, f"{what} chat: {reply.choices[0].message.content!r}")
    check(reply.choices[0].finish_reason == "stop", f"{what} chat finish: {reply.choices[0].finish_reason!r}")
    check_usage(f"{what} chat", (reply.usage.prompt_tokens, reply.usage.completion_tokens), usage)
    ok(f"{what} chat.completions.create", f"{text[:32]!r}..., usage {reply.usage.prompt_tokens}/{reply.usage.completion_tokens}")

    for include_usage in (True, False):
        chunks, deltas, done = [], [], None
        with client.chat.completions.stream(model=model, messages=messages,
                                            stream_options={"include_usage": include_usage}) as stream:
            for event in stream:
                if event.type == "chunk":
                    chunks.append(event.chunk)
                elif event.type == "content.delta":
                    deltas.append(event.delta)
                elif event.type == "content.done":
                    done = event.content
            final = stream.get_final_completion()
        label = f"{what} chat.completions.stream include_usage={include_usage}"
        check(len(deltas) >= 2, f"{label}: {len(deltas)} text deltas")
        check("".join(deltas) == text, f"{label}: deltas add up to {''.join(deltas)!r}")
        # `content.done` fires only when a chunk carries the finish reason.
        check(done == text, f"{label}: content.done {done!r}")
        choice = final.choices[0]
        check(choice.message.role == "assistant", f"{label}: role {choice.message.role!r} (no role chunk?)")
        check(choice.message.content == text and choice.finish_reason == "stop",
              f"{label}: final {choice.message.content!r} / {choice.finish_reason!r}")
        check(chunks[0].choices and chunks[0].choices[0].delta.role == "assistant",
              f"{label}: the first chunk does not carry the role: {chunks[0]!r}")
        finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
        check(len(finishing) == 1, f"{label}: {len(finishing)} chunks carry a finish reason")
        with_usage = [c for c in chunks if c.usage is not None]
        if include_usage:
            check(len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1].choices == [],
                  f"{label}: the usage must come once, last, in a chunk with no choices")
            check_usage(label, (final.usage.prompt_tokens, final.usage.completion_tokens), usage)
        else:
            check(with_usage == [] and final.usage is None, f"{label}: usage sent unasked: {final.usage!r}")
        ok(label, f"{len(deltas)} deltas, {len(chunks)} chunks, usage {final.usage and final.usage.completion_tokens}")


def check_responses(what: str, client: openai.OpenAI, model: str, text: str, usage: tuple) -> None:
    reply = client.responses.create(model=model, input=PROMPT)
    check(reply.output_text == text and reply.status == "completed",
          f"{what} responses.create: {reply.output_text!r} / {reply.status!r}")
    check_usage(f"{what} responses.create", (reply.usage.input_tokens, reply.usage.output_tokens), usage)
    ok(f"{what} responses.create", f"{text[:32]!r}..., usage {reply.usage.input_tokens}/{reply.usage.output_tokens}")

    kinds, numbers, deltas, done = [], [], [], None
    with client.responses.stream(model=model, input=PROMPT) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.output_text.done":
                done = event.text
        final = stream.get_final_response()
    label = f"{what} responses.stream"
    expected = RESPONSES_EVENTS_BEFORE + ["response.output_text.delta"] * len(deltas) + RESPONSES_EVENTS_AFTER
    check(kinds == expected, f"{label}: events {kinds}, expected {expected}")
    check(numbers == list(range(len(kinds))), f"{label}: sequence numbers {numbers}")
    check(len(deltas) >= 2 and "".join(deltas) == text, f"{label}: deltas add up to {''.join(deltas)!r}")
    check(done == text and final.output_text == text, f"{label}: done {done!r}, final {final.output_text!r}")
    check(final.status == "completed", f"{label}: status {final.status!r}")
    check_usage(label, (final.usage.input_tokens, final.usage.output_tokens), usage)
    ok(label, f"{len(kinds)} events, {len(deltas)} deltas, usage {final.usage.input_tokens}/{final.usage.output_tokens}")


def check_messages(what: str, client: anthropic.Anthropic, model: str, text: str, usage: tuple) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    reply = client.messages.create(model=model, max_tokens=64, messages=messages)
    got = "".join(block.text for block in reply.content if block.type == "text")
    check(got == text and reply.stop_reason == "end_turn", f"{what} messages.create: {got!r} / {reply.stop_reason!r}")
    check_usage(f"{what} messages.create", (reply.usage.input_tokens, reply.usage.output_tokens), usage)
    ok(f"{what} messages.create", f"{text[:32]!r}..., usage {reply.usage.input_tokens}/{reply.usage.output_tokens}")

    kinds, deltas = [], []
    with client.messages.stream(model=model, max_tokens=64, messages=messages) as stream:
        for event in stream:
            if event.type == "text":
                deltas.append(event.text)
            else:
                kinds.append(event.type)
        final = stream.get_final_message()
    label = f"{what} messages.stream"
    # The SDK drops `ping` before it reaches here; the Rust tests check it is sent.
    expected = (["message_start", "content_block_start"] + ["content_block_delta"] * len(deltas)
                + ["content_block_stop", "message_delta", "message_stop"])
    check(kinds == expected, f"{label}: events {kinds}, expected {expected}")
    check(len(deltas) >= 2 and "".join(deltas) == text, f"{label}: deltas add up to {''.join(deltas)!r}")
    final_text = "".join(block.text for block in final.content if block.type == "text")
    check(final_text == text and final.stop_reason == "end_turn", f"{label}: final {final_text!r} / {final.stop_reason!r}")
    check_usage(label, (final.usage.input_tokens, final.usage.output_tokens), usage)
    ok(label, f"{len(deltas)} deltas, usage {final.usage.input_tokens}/{final.usage.output_tokens}")


def check_gemini(what: str, client: genai.Client, model: str, text: str, usage: tuple) -> None:
    reply = client.models.generate_content(model=model, contents=PROMPT)
    check(reply.text == text, f"{what} generate_content: {reply.text!r}")
    check(reply.candidates[0].finish_reason == genai_types.FinishReason.STOP,
          f"{what} generate_content finish: {reply.candidates[0].finish_reason!r}")
    meta = reply.usage_metadata
    check_usage(f"{what} generate_content", (meta.prompt_token_count, meta.candidates_token_count), usage)
    ok(f"{what} generate_content", f"{text[:32]!r}..., usage {meta.prompt_token_count}/{meta.candidates_token_count}")

    chunks = list(client.models.generate_content_stream(model=model, contents=PROMPT))
    label = f"{what} generate_content_stream"
    pieces = [chunk.text for chunk in chunks]
    check(len(pieces) >= 2 and "".join(pieces) == text, f"{label}: chunks add up to {''.join(pieces)!r}")
    finishes = [chunk.candidates[0].finish_reason for chunk in chunks]
    check(finishes[-1] == genai_types.FinishReason.STOP and all(f is None for f in finishes[:-1]),
          f"{label}: finish reasons {finishes}")
    meta = chunks[-1].usage_metadata
    check(meta is not None, f"{label}: no usageMetadata on the last chunk")
    check_usage(label, (meta.prompt_token_count, meta.candidates_token_count), usage)
    ok(label, f"{len(chunks)} chunks, usage {meta.prompt_token_count}/{meta.candidates_token_count}")


def check_completions(what: str, client: openai.OpenAI, model: str, text: str, usage: tuple) -> None:
    """Legacy completions (`POST /v1/completions`), whole and streamed with and without usage."""
    reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=64)
    choice = reply.choices[0]
    check(reply.object == "text_completion" and choice.text == text and choice.finish_reason == "stop",
          f"{what} completions.create: {reply!r}")
    check_usage(f"{what} completions.create", (reply.usage.prompt_tokens, reply.usage.completion_tokens), usage)
    ok(f"{what} completions.create", f"{text[:32]!r}..., usage {reply.usage.prompt_tokens}/{reply.usage.completion_tokens}")

    for include_usage in (True, False):
        label = f"{what} completions.create stream include_usage={include_usage}"
        chunks = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=64, stream=True,
                                                stream_options={"include_usage": include_usage}))
        check(all(c.object == "text_completion" for c in chunks), f"{label}: chunk objects {[c.object for c in chunks]}")
        pieces = [c.choices[0].text for c in chunks if c.choices]
        check(len(pieces) >= 2 and "".join(pieces) == text, f"{label}: chunks add up to {''.join(pieces)!r}")
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        check(finishes[-1] == "stop" and all(f is None for f in finishes[:-1]), f"{label}: finish reasons {finishes}")
        with_usage = [c for c in chunks if c.usage is not None]
        if include_usage:
            check(len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1].choices == [],
                  f"{label}: the usage must come once, last, in a chunk with no choices")
            last = chunks[-1].usage
            check_usage(label, (last.prompt_tokens, last.completion_tokens), usage)
        else:
            check(with_usage == [], f"{label}: usage sent unasked: {with_usage!r}")
        ok(label, f"{len(chunks)} chunks, usage {with_usage[0].usage.completion_tokens if with_usage else None}")


def check_models_retrieve(what: str, base: str, key: str, models: dict) -> None:
    """Each SDK's models.retrieve of one model (`GET /v1/models/{id}`), in its API's shape;
    `models` maps "openai" and "anthropic" to the model to ask for."""
    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    model = oa.models.retrieve(models["openai"])
    check(model.id == models["openai"] and model.object == "model" and isinstance(model.created, int)
          and isinstance(model.owned_by, str) and model.owned_by, f"{what} openai models.retrieve: {model!r}")
    ok(f"{what} openai models.retrieve", f"{model.id}, owned by {model.owned_by}")
    an = anthropic.Anthropic(base_url=base, api_key=key, timeout=TIMEOUT, max_retries=0)
    model = an.models.retrieve(models["anthropic"])
    check(model.id == models["anthropic"] and model.type == "model" and model.display_name
          and isinstance(model.created_at, datetime.datetime), f"{what} anthropic models.retrieve: {model!r}")
    ok(f"{what} anthropic models.retrieve", f"{model.id}, {model.display_name!r}, {model.created_at.isoformat()}")


def check_gemini_methods(what: str, client: genai.Client, model: str, embedding_model: str,
                         counted: int, vector: list) -> None:
    """Gemini's methods besides generating: countTokens, embedContent, batchEmbedContents and
    models.get, on the client's API version. `counted` is the expected token count (None: any
    positive count); `vector` the expected embedding of one text (None: any), a batch answering
    it times 1, 2, ... in order."""
    label = f"{what} count_tokens"
    reply = client.models.count_tokens(model=model, contents=PROMPT)
    check(isinstance(reply.total_tokens, int) and reply.total_tokens > 0
          and (counted is None or reply.total_tokens == counted), f"{label}: {reply!r}, expected {counted}")
    ok(label, f"total_tokens {reply.total_tokens}")

    # The SDK sends one text and several alike to `batchEmbedContents` (it calls
    # `embedContent` only on Vertex AI).
    for texts in ([PROMPT], [PROMPT, "Say goodbye", "Say nothing"]):
        label = f"{what} embed_content of {len(texts)}"
        reply = client.models.embed_content(model=embedding_model, contents=texts)
        got = [e.values for e in reply.embeddings or []]
        want = None if vector is None else [[x * n for x in vector] for n in range(1, len(texts) + 1)]
        check(len(got) == len(texts) and all(isinstance(v, list) and v for v in got)
              and (want is None or got == want), f"{label}: {got}, expected {want}")
        ok(label, f"{len(got)} vectors of {len(got[0])}")

    # `embedContent` has no SDK method on the Gemini API: the SDK's own HTTP client sends it,
    # with the SDK's base URL, API version and key header.
    label = f"{what} embedContent"
    raw = client._api_client.request("post", f"models/{embedding_model}:embedContent",
                                     {"content": {"parts": [{"text": PROMPT}]}})
    values = (json.loads(raw.body).get("embedding") or {}).get("values")
    check(isinstance(values, list) and values and (vector is None or values == vector), f"{label}: {raw.body}")
    ok(label, f"1 vector of {len(values)}")

    for name in (model, embedding_model):
        label = f"{what} models.get {name}"
        got = client.models.get(model=name)
        check(got.name == f"models/{name}" and got.display_name and got.supported_actions, f"{label}: {got!r}")
        ok(label, f"{got.name}, {got.display_name!r}")


def check_mock_embeddings(client: openai.OpenAI) -> None:
    """The mock's embeddings as floats, as base64 (little-endian f32s) when asked, and as the
    SDK's default: it asks for base64 when no format is given and decodes the answer itself."""
    inputs = [PROMPT, "Say goodbye"]
    model = "mock-embedding"
    floats = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    vectors = [e.embedding for e in floats.data]
    check(len(vectors) == 2 and all(isinstance(v, list) and len(v) >= 4 for v in vectors),
          f"embeddings float: {floats!r}")
    check(vectors[0] != vectors[1], "embeddings float: the two inputs got the same vector")
    for vector in vectors:
        norm = math.sqrt(sum(x * x for x in vector))
        check(abs(norm - 1.0) < 1e-3, f"embeddings float: norm {norm}")
    check(floats.usage.prompt_tokens > 0, f"embeddings float: usage {floats.usage!r}")
    ok("demo embeddings.create float", f"{len(vectors)} vectors of {len(vectors[0])}")

    encoded = client.embeddings.create(model=model, input=inputs, encoding_format="base64")
    texts = [e.embedding for e in encoded.data]
    check(all(isinstance(t, str) for t in texts), f"embeddings base64: not strings: {texts!r}")
    decoded = [list(struct.unpack(f"<{len(base64.b64decode(t)) // 4}f", base64.b64decode(t))) for t in texts]
    for got, want in zip(decoded, vectors):
        check(len(got) == len(want) and all(abs(g - w) < 1e-6 for g, w in zip(got, want)),
              f"embeddings base64: decoded {got}, the float answer is {want}")
    ok("demo embeddings.create base64", f"{len(texts)} vectors, little-endian f32")

    default = client.embeddings.create(model=model, input=inputs)
    got = [e.embedding for e in default.data]
    check(got == decoded, f"embeddings (SDK default, base64 decoded by the SDK): {got}, expected {decoded}")
    ok("demo embeddings.create default", "the SDK asked for base64 and decoded it")


def gemini_client(base: str, key: str, version: str = "v1beta") -> genai.Client:
    return genai.Client(api_key=key, http_options=genai_types.HttpOptions(
        base_url=base, api_version=version, timeout=int(TIMEOUT * 1000)))


def check_endpoints(what: str, base: str, key: str, model: str, text: str) -> None:
    """The endpoints besides chat (SPEC section 3): each SDK's models.retrieve, Anthropic's
    list shape, legacy completions, and Gemini's methods on `v1` (the google-genai default)."""
    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    retrieved = oa.models.retrieve(model)
    check(retrieved.id == model and retrieved.object == "model", f"{what} openai models.retrieve: {retrieved!r}")
    ok(f"{what} openai models.retrieve", retrieved.id)
    completion = oa.completions.create(model=model, prompt=PROMPT, max_tokens=64)
    check(completion.choices[0].text == text, f"{what} openai completions.create: {completion!r}")
    ok(f"{what} openai completions.create", f"usage {completion.usage.prompt_tokens}/{completion.usage.completion_tokens}")
    an = anthropic.Anthropic(base_url=base, api_key=key, timeout=TIMEOUT, max_retries=0)
    listed = an.models.list()
    check(len(listed.data) > 0 and all(m.type == "model" for m in listed.data), f"{what} anthropic models.list: {listed!r}")
    ok(f"{what} anthropic models.list", ", ".join(m.id for m in listed.data))
    retrieved = an.models.retrieve(model)
    check(retrieved.id == model, f"{what} anthropic models.retrieve: {retrieved!r}")
    ok(f"{what} anthropic models.retrieve", retrieved.id)
    # A GenAI client closes its connection pool when it is garbage-collected: keep a name on it.
    gm = genai.Client(api_key=key, http_options=genai_types.HttpOptions(
        base_url=base, api_version="v1", timeout=int(TIMEOUT * 1000)))
    reply = gm.models.generate_content(model=model, contents=PROMPT)
    check(reply.text == text, f"{what} gemini v1 generate_content: {reply.text!r}")
    ok(f"{what} gemini v1 generate_content", f"{text[:32]!r}...")
    counted = gm.models.count_tokens(model=model, contents=PROMPT)
    check((counted.total_tokens or 0) > 0, f"{what} gemini v1 count_tokens: {counted!r}")
    ok(f"{what} gemini v1 count_tokens", f"total_tokens {counted.total_tokens}")
    embedded = gm.models.embed_content(model=model, contents=[PROMPT, "a second text"])
    vectors = [e.values for e in embedded.embeddings]
    check(len(vectors) == 2 and all(vectors) and vectors[0] != vectors[1], f"{what} gemini v1 embed_content: {embedded!r}")
    ok(f"{what} gemini v1 embed_content", f"{len(vectors)} vectors of {len(vectors[0])}")
    names = [m.name for m in gm.models.list()]
    check(len(names) > 0 and all(n.startswith("models/") for n in names), f"{what} gemini v1 models.list: {names}")
    ok(f"{what} gemini v1 models.list", ", ".join(names))
    got = gm.models.get(model=model)
    check(got.name == f"models/{model}", f"{what} gemini v1 models.get: {got!r}")
    ok(f"{what} gemini v1 models.get", got.name)


def check_demo(base: str, key: str) -> None:
    """The built-in mock, through the demo gateway (the only way to reach it)."""
    text = MOCK_TEXT.format(model=MOCK_MODEL)
    usage = (None, len(text.split(" ")))
    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    check_chat("demo", oa, MOCK_MODEL, text, usage)
    check_responses("demo", oa, MOCK_MODEL, text, usage)
    check_mock_embeddings(oa)
    # The demo's provider is `mock-*`: the listing names the models the mock serves.
    models = [model.id for model in oa.models.list()]
    check(models == MOCK_MODELS, f"openai models.list: {models}, expected {MOCK_MODELS}")
    ok("demo openai models.list", ", ".join(models))
    an = anthropic.Anthropic(base_url=base, api_key=key, timeout=TIMEOUT, max_retries=0)
    check_messages("demo", an, MOCK_MODEL, text, usage)
    counted = an.messages.count_tokens(model=MOCK_MODEL, messages=[{"role": "user", "content": PROMPT}])
    check(isinstance(counted.input_tokens, int) and counted.input_tokens > 0,
          f"demo messages.count_tokens: {counted!r}")
    ok("demo messages.count_tokens", f"input_tokens {counted.input_tokens}")
    models = [model.id for model in an.models.list()]
    check(models == MOCK_MODELS, f"anthropic models.list: {models}, expected {MOCK_MODELS}")
    ok("demo anthropic models.list", ", ".join(models))
    # A GenAI client closes its connection pool when it is garbage-collected: keep a name on it.
    gm = gemini_client(base, key)
    check_gemini("demo", gm, MOCK_MODEL, text, usage)
    check_endpoints("demo", base, key, MOCK_MODEL, text)

    wrong_key = "cpk-not-a-valid-key-000000"
    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key=wrong_key, timeout=TIMEOUT, max_retries=0)
    try:
        wrong.chat.completions.create(model=MOCK_MODEL, messages=[{"role": "user", "content": PROMPT}])
    except openai.AuthenticationError as error:
        check(error.status_code == 401, f"openai wrong key: status {error.status_code}")
        ok("demo openai wrong key", f"AuthenticationError {error.status_code}")
    else:
        raise SystemExit("FAILED: openai request with a wrong key succeeded")
    wrong = anthropic.Anthropic(base_url=base, api_key=wrong_key, timeout=TIMEOUT, max_retries=0)
    try:
        wrong.messages.create(model=MOCK_MODEL, max_tokens=16, messages=[{"role": "user", "content": PROMPT}])
    except anthropic.AuthenticationError as error:
        check(error.status_code == 401, f"anthropic wrong key: status {error.status_code}")
        ok("demo anthropic wrong key", f"AuthenticationError {error.status_code}")
    else:
        raise SystemExit("FAILED: anthropic request with a wrong key succeeded")
    try:
        gm_wrong = gemini_client(base, wrong_key)
        gm_wrong.models.generate_content(model=MOCK_MODEL, contents=PROMPT)
    except genai_errors.ClientError as error:
        check(error.code == 401, f"gemini wrong key: status {error.code}")
        ok("demo gemini wrong key", f"ClientError {error.code}")
    else:
        raise SystemExit("FAILED: gemini request with a wrong key succeeded")


# The models `fixture_upstream` lists, per API, and all of them together.
FIXTURE_MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "dall-e-3", "whisper-1", "o3-mini"],
    "anthropic": ["claude-sonnet-4", "claude-opus-4-1", "claude-haiku-4-5"],
    "gemini": ["gemini-2.0-flash", "text-embedding-004", "gemini-2.5-pro", "imagen-3.0-generate-002"],
}
# What the gateway of check.sh lists of them: `dall-e-3`, `whisper-1`, `o3-mini` and
# `imagen-*` match no glob, and `text-embedding-004` is the Gemini upstream's while only
# `gemini-*` is routed there.
FIXTURE_GATEWAY_LISTED = ["claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4", "gemini-2.0-flash",
                          "gemini-2.5-pro", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small",
                          "x-chat", "x-claude", "x-gemini", "x-responses"]

# The aliases of check.sh's gateway, one per provider wire format, and the usage the fixture
# reports in that format (the translated reply carries the provider's figures).
TRANSLATED = {"x-chat": "openai", "x-responses": "responses", "x-claude": "anthropic", "x-gemini": "gemini"}
# The wire format each client SDK speaks, to skip the pair that is no translation.
SDK_FORMAT = {"chat": "openai", "responses": "responses", "messages": "anthropic", "gemini": "gemini"}


def check_translated(url: str, key: str) -> None:
    """Every client SDK against a provider of every other format (SPEC §9), with the same
    checks as untranslated: text, finish reason and usage, whole and through the SDK's own
    stream helper, and the stream's event order against the real API's."""
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    an = anthropic.Anthropic(base_url=url, api_key=key, timeout=TIMEOUT, max_retries=0)
    gm = gemini_client(url, key, "v1beta")
    for alias, provider in TRANSLATED.items():
        usage = FIXTURE_USAGE[provider]
        for sdk, wire in SDK_FORMAT.items():
            if wire == provider:
                continue
            what = f"translated {sdk}->{provider}"
            if sdk == "chat":
                check_chat(what, oa, alias, FIXTURE_TEXT, usage)
            elif sdk == "responses":
                check_responses(what, oa, alias, FIXTURE_TEXT, usage)
            elif sdk == "messages":
                check_messages(what, an, alias, FIXTURE_TEXT, usage)
            else:
                check_gemini(what, gm, alias, FIXTURE_TEXT, usage)


def check_fixtures(url: str, key: str = "sk-fixture-check", what: str = "fixtures") -> None:
    """The e2e suite's fixtures, straight from `fixture_upstream` or through a gateway."""
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    check_chat(what, oa, "gpt-4o-mini", FIXTURE_TEXT, FIXTURE_USAGE["openai"])
    check_responses(what, oa, "gpt-4o-mini", FIXTURE_TEXT, FIXTURE_USAGE["responses"])
    embedded = oa.embeddings.create(model="text-embedding-3-small", input=PROMPT, encoding_format="float")
    check([e.embedding for e in embedded.data] == [FIXTURE_EMBEDDING]
          and embedded.usage.prompt_tokens == 8 and embedded.usage.total_tokens == 8,
          f"{what} embeddings.create: {embedded!r}")
    ok(f"{what} embeddings.create", f"{len(embedded.data)} vector, usage {embedded.usage.prompt_tokens}")
    an = anthropic.Anthropic(base_url=url, api_key=key, timeout=TIMEOUT, max_retries=0)
    check_messages(what, an, "claude-sonnet-4", FIXTURE_TEXT, FIXTURE_USAGE["anthropic"])
    counted = an.messages.count_tokens(model="claude-sonnet-4", messages=[{"role": "user", "content": PROMPT}])
    check(counted.input_tokens == FIXTURE_COUNTED_TOKENS, f"{what} messages.count_tokens: {counted!r}")
    ok(f"{what} messages.count_tokens", f"input_tokens {counted.input_tokens}")
    check_completions(what, oa, FIXTURE_INSTRUCT, FIXTURE_TEXT, FIXTURE_COMPLETION_USAGE)
    # Answered by the fixture straight, by the gateway from its routing through it.
    check_models_retrieve(what, url, key, {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4"})
    # `v1` is the google-genai SDK's default, `v1beta` older clients'.
    for version in ("v1beta", "v1"):
        # A GenAI client closes its connection pool when it is garbage-collected: keep a name on it.
        gm = gemini_client(url, key, version)
        check_gemini(f"{what} {version}", gm, "gemini-2.0-flash", FIXTURE_TEXT, FIXTURE_USAGE["gemini"])
        check_gemini_methods(f"{what} {version}", gm, "gemini-2.0-flash", "gemini-embedding-001",
                             FIXTURE_COUNTED_TOKENS, FIXTURE_EMBEDDING)
    # The lists are Gemini's under `v1beta` (the fixture's `/v1/models` is OpenAI's and
    # Anthropic's, as the real APIs' are).
    gm = gemini_client(url, key, "v1beta")
    check_fixture_models(what, oa, an, gm)


def check_fixture_models(what: str, oa, an, gm) -> None:
    """Each SDK's models.list of the fixtures' lists (Anthropic's and Gemini's in two pages,
    which the SDKs follow): as they are directly; through the gateway, the upstreams' names its
    globs match (`gpt-*`, `text-embedding-*`, `claude-*`, `gemini-*` in check.sh), from every
    provider, in each SDK's shape."""
    if what == "gateway":
        expected = {sdk: FIXTURE_GATEWAY_LISTED for sdk in FIXTURE_MODELS}
    else:
        expected = {sdk: sorted(names) for sdk, names in FIXTURE_MODELS.items()}
    listed = {
        "openai": sorted(m.id for m in oa.models.list()),
        "anthropic": sorted(m.id for m in an.models.list()),
        "gemini": sorted(m.name.removeprefix("models/") for m in gm.models.list()),
    }
    for sdk, names in listed.items():
        check(names == expected[sdk], f"{what} {sdk} models.list: {names}, expected {expected[sdk]}")
        ok(f"{what} {sdk} models.list", ", ".join(names))


# The built-in prices of the fixture models (docs/pricing.md, "Built-in prices"), in USD per 1M
# tokens (input, output), as the documentation states them: the check computes the expected
# cost from these, not from the gateway's answers. An alias is priced as its upstream model.
DOCUMENTED_PRICES = {"gpt-4o-mini": ("0.15", "0.60"), "claude-sonnet-4": ("3.00", "15.00"),
                     "gemini-2.0-flash": ("0.10", "0.40")}
# The run-time key's name and the models it may call: the three natives and one alias.
RUNTIME_KEY_NAME = "sdk-check-runtime"
RUNTIME_KEY_MODELS = ["gpt-4o-mini", "claude-sonnet-4", "gemini-2.0-flash", "x-claude"]
# How long `cliproxy-server usage` may lag behind the API: the gateway commits the usage rows
# every `state.flush_interval` (at most 1 s, docs/usage.md), and the CLI reads the file only.
CLI_USAGE_DEADLINE = 10.0


def micros_per_million(price: str) -> int:
    """A documented price (decimal USD per 1M tokens) as integer micro-dollars per 1M tokens."""
    whole, _, fraction = price.partition(".")
    check(len(fraction) <= 6, f"price {price} has more than six decimals")
    return int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))


def expected_cost(model: str, usage: tuple) -> int:
    """The cost of one request in micro-dollars, as docs/pricing.md defines it: the tokens at
    the per-1M prices, divided by 1M, rounded up to the next micro-dollar."""
    input_price, output_price = (micros_per_million(p) for p in DOCUMENTED_PRICES[model])
    return -(-(usage[0] * input_price + usage[1] * output_price) // 1_000_000)


def format_micros(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


class Answer:
    """A management API answer: its status, its body as text, and that body as JSON."""

    def __init__(self, status_code: int, text: str) -> None:
        self.status_code, self.text = status_code, text

    def json(self):
        return json.loads(self.text)


def manage(url: str, management_key: str, method: str, path: str, body=None) -> Answer:
    """A management API call with the standard library (no client of its own to pin)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/v0/management{path}", data=data, method=method,
                                     headers={"x-management-key": management_key,
                                              "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return Answer(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode())


class Tally:
    """What the SDKs reported for the run-time key: per model the client asked for, the
    requests, the tokens and the expected cost."""

    def __init__(self) -> None:
        self.models: dict = {}

    def add(self, model: str, priced_as: str, usage: tuple) -> None:
        row = self.models.setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0})
        row["requests"] += 1
        row["input_tokens"] += usage[0]
        row["output_tokens"] += usage[1]
        row["cost"] += expected_cost(priced_as, usage)

    def total(self) -> dict:
        keys = ("requests", "input_tokens", "output_tokens", "cost")
        return {k: sum(row[k] for row in self.models.values()) for k in keys}


def usage_groups(report: dict) -> dict:
    """The report's buckets summed per group (a run may straddle an hour boundary)."""
    groups: dict = {}
    for bucket in report["buckets"]:
        row = groups.setdefault(bucket["group"], {"requests": 0, "errors": 0, "input_tokens": 0,
                                                  "output_tokens": 0, "cost": 0, "unpriced_requests": 0})
        for field in ("requests", "errors", "input_tokens", "output_tokens", "unpriced_requests"):
            row[field] += bucket[field]
        whole, _, fraction = bucket["cost_usd"].partition(".")
        check(len(fraction) == 6, f"usage cost_usd {bucket['cost_usd']!r} is not a six-decimal string")
        row["cost"] += int(whole) * 1_000_000 + int(fraction)
    return groups


def check_usage_row(what: str, got: dict, want: dict) -> None:
    check(got is not None, f"{what}: no usage row")
    figures = {k: got[k] for k in ("requests", "input_tokens", "output_tokens")}
    figures["cost_usd"] = format_micros(got["cost"])
    expected = {k: want[k] for k in ("requests", "input_tokens", "output_tokens")}
    expected["cost_usd"] = format_micros(want["cost"])
    check(figures == expected, f"{what}: usage {figures}, expected {expected}")
    check(got["errors"] == 0 and got["unpriced_requests"] == 0,
          f"{what}: {got['errors']} errors, {got['unpriced_requests']} unpriced requests, expected none")


def sdk_calls(url: str, key: str, tally: Tally) -> None:
    """A few calls with `key`, whole and streamed, through each SDK's native provider and the
    translated alias `x-claude`; each call's usage as its SDK reports it goes into `tally`."""
    messages = [{"role": "user", "content": PROMPT}]
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    an = anthropic.Anthropic(base_url=url, api_key=key, timeout=TIMEOUT, max_retries=0)
    gm = gemini_client(url, key, "v1beta")

    def chat(model: str, priced_as: str) -> None:
        reply = oa.chat.completions.create(model=model, messages=messages)
        check(reply.choices[0].message.content == FIXTURE_TEXT, f"runtime key chat {model}: {reply!r}")
        tally.add(model, priced_as, (reply.usage.prompt_tokens, reply.usage.completion_tokens))
        with oa.chat.completions.stream(model=model, messages=messages,
                                        stream_options={"include_usage": True}) as stream:
            final = stream.get_final_completion()
        check(final.choices[0].message.content == FIXTURE_TEXT and final.usage is not None,
              f"runtime key chat stream {model}: {final!r}")
        tally.add(model, priced_as, (final.usage.prompt_tokens, final.usage.completion_tokens))
        ok(f"runtime key chat {model}", f"usage {reply.usage.prompt_tokens}/{reply.usage.completion_tokens}, "
           f"streamed {final.usage.prompt_tokens}/{final.usage.completion_tokens}")

    chat("gpt-4o-mini", "gpt-4o-mini")
    # The alias reaches the Anthropic provider, translated, and is priced as its upstream.
    chat("x-claude", "claude-sonnet-4")

    reply = an.messages.create(model="claude-sonnet-4", max_tokens=64, messages=messages)
    check(reply.content[0].text == FIXTURE_TEXT, f"runtime key messages: {reply!r}")
    tally.add("claude-sonnet-4", "claude-sonnet-4", (reply.usage.input_tokens, reply.usage.output_tokens))
    with an.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=messages) as stream:
        final = stream.get_final_message()
    check(final.content[0].text == FIXTURE_TEXT, f"runtime key messages stream: {final!r}")
    tally.add("claude-sonnet-4", "claude-sonnet-4", (final.usage.input_tokens, final.usage.output_tokens))
    ok("runtime key messages claude-sonnet-4", f"usage {reply.usage.input_tokens}/{reply.usage.output_tokens}, "
       f"streamed {final.usage.input_tokens}/{final.usage.output_tokens}")

    reply = gm.models.generate_content(model="gemini-2.0-flash", contents=PROMPT)
    check(reply.text == FIXTURE_TEXT, f"runtime key generate_content: {reply.text!r}")
    meta = reply.usage_metadata
    tally.add("gemini-2.0-flash", "gemini-2.0-flash", (meta.prompt_token_count, meta.candidates_token_count))
    chunks = list(gm.models.generate_content_stream(model="gemini-2.0-flash", contents=PROMPT))
    check("".join(c.text for c in chunks) == FIXTURE_TEXT, "runtime key generate_content_stream: text")
    last = chunks[-1].usage_metadata
    tally.add("gemini-2.0-flash", "gemini-2.0-flash", (last.prompt_token_count, last.candidates_token_count))
    ok("runtime key generate_content gemini-2.0-flash", f"usage {meta.prompt_token_count}/"
       f"{meta.candidates_token_count}, streamed {last.prompt_token_count}/{last.candidates_token_count}")


def cli_usage(server: str, config: str, by: str) -> dict:
    done = subprocess.run([server, "--config", config, "usage", "--json", "--by", by],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    check(done.returncode == 0, f"cliproxy-server usage --json --by {by}: exit {done.returncode}: {done.stderr}")
    return json.loads(done.stdout)


def check_runtime_key(url: str, management_key: str, server: str, config: str, logs: list) -> None:
    """A client key created at run time (docs/client-keys.md), used with the three SDKs, seen
    in the usage history (docs/usage.md) with the tokens the SDKs reported and the cost the
    documented prices give, then revoked: the next call is the SDK's authentication error.
    Runs before any other client uses the gateway, so that the history `by=model` is this
    key's alone."""
    created = manage(url, management_key, "POST", "/client-keys", {
        "name": RUNTIME_KEY_NAME, "models": RUNTIME_KEY_MODELS,
        "budget": {"usd": "5", "period": "daily"}})
    check(created.status_code == 201, f"POST /client-keys: {created.status_code} {created.text}")
    key = created.json()["key"]
    check(key.startswith("cpk-") and len(key) == 52, "POST /client-keys: the key is not cpk- and 48 hex digits")
    ok("management POST /client-keys", f"{RUNTIME_KEY_NAME}, models {RUNTIME_KEY_MODELS}, budget $5 daily")

    tally = Tally()
    sdk_calls(url, key, tally)
    want = tally.total()

    # The API hands the accumulator's rows to the store and reads after they are written.
    answer = manage(url, management_key, "GET", "/usage?by=key")
    check(answer.status_code == 200, f"GET /usage?by=key: {answer.status_code} {answer.text}")
    by_key = usage_groups(answer.json())
    check_usage_row(f"GET /usage?by=key {RUNTIME_KEY_NAME}", by_key.get(RUNTIME_KEY_NAME), want)
    ok("management GET /usage?by=key", f"{want['requests']} requests, {want['input_tokens']}/"
       f"{want['output_tokens']} tokens, ${format_micros(want['cost'])}")
    answer = manage(url, management_key, "GET", "/usage?by=model")
    check(answer.status_code == 200, f"GET /usage?by=model: {answer.status_code} {answer.text}")
    by_model = usage_groups(answer.json())
    check(sorted(by_model) == sorted(tally.models), f"GET /usage?by=model: groups {sorted(by_model)}, "
          f"expected {sorted(tally.models)}")
    for model, row in tally.models.items():
        check_usage_row(f"GET /usage?by=model {model}", by_model[model], row)
    ok("management GET /usage?by=model", ", ".join(f"{m} ${format_micros(r['cost'])}" for m, r in tally.models.items()))

    # The command line reads the state file only, which the gateway commits once per flush
    # interval: no event tells when the rows are on disk, so poll, bounded.
    deadline = time.monotonic() + CLI_USAGE_DEADLINE
    while True:
        cli_key = usage_groups(cli_usage(server, config, "key")).get(RUNTIME_KEY_NAME)
        if cli_key is not None and cli_key["requests"] >= want["requests"]:
            break
        check(time.monotonic() < deadline, f"cliproxy-server usage --json: the key's {want['requests']} "
              f"requests not on disk within {CLI_USAGE_DEADLINE} s (got {cli_key})")
        time.sleep(0.1)
    check_usage_row(f"cliproxy-server usage --json --by key {RUNTIME_KEY_NAME}", cli_key, want)
    cli_model = usage_groups(cli_usage(server, config, "model"))
    for model, row in tally.models.items():
        check_usage_row(f"cliproxy-server usage --json --by model {model}", cli_model.get(model), row)
    ok("cliproxy-server usage --json", "agrees with the API by key and by model")

    # A model outside the key's list is refused before anything is sent.
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    try:
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}])
    except openai.PermissionDeniedError as error:
        ok("runtime key on a model outside its list", f"PermissionDeniedError {error.status_code}")
    else:
        raise SystemExit("FAILED: the runtime key called gpt-4o, which its models do not list")

    revoked = manage(url, management_key, "DELETE", f"/client-keys/{RUNTIME_KEY_NAME}")
    check(revoked.status_code == 204, f"DELETE /client-keys: {revoked.status_code} {revoked.text}")
    try:
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    except openai.AuthenticationError as error:
        check(error.status_code == 401, f"openai revoked key: status {error.status_code}")
        ok("runtime key revoked, openai", f"AuthenticationError {error.status_code}")
    else:
        raise SystemExit("FAILED: an openai request with the revoked key succeeded")
    an = anthropic.Anthropic(base_url=url, api_key=key, timeout=TIMEOUT, max_retries=0)
    try:
        an.messages.create(model="claude-sonnet-4", max_tokens=16, messages=[{"role": "user", "content": PROMPT}])
    except anthropic.AuthenticationError as error:
        ok("runtime key revoked, anthropic", f"AuthenticationError {error.status_code}")
    else:
        raise SystemExit("FAILED: an anthropic request with the revoked key succeeded")
    gm = gemini_client(url, key)
    try:
        gm.models.generate_content(model="gemini-2.0-flash", contents=PROMPT)
    except genai_errors.ClientError as error:
        check(error.code == 401, f"gemini revoked key: status {error.code}")
        ok("runtime key revoked, gemini", f"ClientError {error.code}")
    else:
        raise SystemExit("FAILED: a gemini request with the revoked key succeeded")

    # The key was shown once, in the creation's answer: none of the gateway's logs (nor its
    # audit log) may hold it, whole or as its random part.
    secret = key.removeprefix("cpk-")
    named = []
    for path in logs:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
        check(secret not in text, f"the run-time client key appears in {path}")
        if RUNTIME_KEY_NAME in text:
            named.append(path)
    # The creation and the revocation are logged and audited under the key's name: files that
    # do not name it would not show that the sweep read the right ones.
    check(len(named) >= 2, f"the key's name {RUNTIME_KEY_NAME} is in {named} only, expected the log and the audit log")
    ok("run-time key sweep", f"not in {', '.join(os.path.basename(p) for p in logs)}")


def main() -> None:
    if len(sys.argv) not in (4, 6, 10):
        raise SystemExit("usage: check.py DEMO_BASE_URL DEMO_CLIENT_KEY FIXTURE_URL [GATEWAY_URL GATEWAY_CLIENT_KEY "
                         "[MANAGEMENT_KEY SERVER_BINARY CONFIG LOG_FILES]]")
    base, key, fixtures = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3].rstrip("/")
    gateway = (sys.argv[4].rstrip("/"), sys.argv[5]) if len(sys.argv) >= 6 else None
    managed = (sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9].split(":")) if len(sys.argv) == 10 else None
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, google-genai {genai.__version__}",
          flush=True)
    try:
        print(f"-- the built-in mock through the demo gateway at {base}", flush=True)
        check_demo(base, key)
        print(f"-- the e2e fixtures, directly at {fixtures}", flush=True)
        check_fixtures(fixtures)
        if gateway and managed:
            print(f"-- a client key created at run time, its usage and its revocation at {gateway[0]}", flush=True)
            check_runtime_key(gateway[0], *managed)
        if gateway:
            print(f"-- the e2e fixtures through a gateway at {gateway[0]}", flush=True)
            check_fixtures(gateway[0], gateway[1], "gateway")
            print(f"-- every client SDK against a provider of every other format at {gateway[0]}", flush=True)
            check_translated(gateway[0], gateway[1])
    except (openai.OpenAIError, anthropic.AnthropicError, genai_errors.APIError, RuntimeError) as error:
        traceback.print_exc()
        raise SystemExit(f"FAILED: unexpected {type(error).__module__}.{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
