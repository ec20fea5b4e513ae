"""Drives a running cliproxy demo with the official OpenAI and Anthropic SDKs.

Usage: check.py BASE_URL CLIENT_KEY   (the demo prints both)

Only base_url and api_key differ from talking to the real providers. Prints one line per
check and exits non-zero at the first failure.
"""

import sys
import traceback

import anthropic
import openai

MODEL = "mock-1"
TIMEOUT = 20.0


def ok(what: str, detail: str) -> None:
    print(f"ok {what}: {detail}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_openai(base: str, key: str) -> None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=TIMEOUT, max_retries=0)
    messages = [{"role": "user", "content": "Say hello"}]

    reply = client.chat.completions.create(model=MODEL, messages=messages)
    text = reply.choices[0].message.content or ""
    check(text != "", f"openai non-streamed reply has no text: {reply!r}")
    check(reply.usage is not None and positive(reply.usage.prompt_tokens)
          and positive(reply.usage.completion_tokens) and positive(reply.usage.total_tokens),
          f"openai usage missing: {reply.usage!r}")
    ok("openai non-streamed", f"{text[:40]!r}, usage {reply.usage.prompt_tokens}/{reply.usage.completion_tokens}")

    deltas, usage = [], None
    stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    check(len(deltas) >= 2, f"openai stream sent {len(deltas)} text deltas")
    check("".join(deltas) != "", "openai stream text is empty")
    check(usage is not None and positive(usage.prompt_tokens) and positive(usage.completion_tokens),
          f"openai stream usage (stream_options.include_usage): {usage!r}")
    ok("openai streamed", f"{len(deltas)} deltas, {''.join(deltas)[:40]!r}")

    models = [model.id for model in client.models.list()]
    check(any(m.startswith("mock-") for m in models), f"openai models.list: {models}")
    ok("openai models.list", ", ".join(models))

    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="cpk-not-a-valid-key-000000",
                          timeout=TIMEOUT, max_retries=0)
    try:
        wrong.chat.completions.create(model=MODEL, messages=messages)
    except openai.AuthenticationError as error:
        check(error.status_code == 401, f"openai wrong key: status {error.status_code}")
        ok("openai wrong key", f"AuthenticationError {error.status_code}")
    else:
        raise SystemExit("FAILED: openai request with a wrong key succeeded")


def check_anthropic(base: str, key: str) -> None:
    client = anthropic.Anthropic(base_url=base, api_key=key, timeout=TIMEOUT, max_retries=0)
    messages = [{"role": "user", "content": "Say hello"}]

    reply = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    text = "".join(block.text for block in reply.content if block.type == "text")
    check(text != "", f"anthropic non-streamed reply has no text: {reply!r}")
    check(positive(reply.usage.input_tokens) and positive(reply.usage.output_tokens),
          f"anthropic usage: {reply.usage!r}")
    ok("anthropic non-streamed", f"{text[:40]!r}, usage {reply.usage.input_tokens}/{reply.usage.output_tokens}")

    deltas = []
    with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        for delta in stream.text_stream:
            deltas.append(delta)
        final = stream.get_final_message()
    check(len(deltas) >= 2, f"anthropic stream sent {len(deltas)} text deltas")
    check("".join(deltas) != "", "anthropic stream text is empty")
    check(positive(final.usage.output_tokens), f"anthropic stream usage: {final.usage!r}")
    ok("anthropic streamed", f"{len(deltas)} deltas, {''.join(deltas)[:40]!r}")

    wrong = anthropic.Anthropic(base_url=base, api_key="cpk-not-a-valid-key-000000",
                                timeout=TIMEOUT, max_retries=0)
    try:
        wrong.messages.create(model=MODEL, max_tokens=16, messages=messages)
    except anthropic.AuthenticationError as error:
        check(error.status_code == 401, f"anthropic wrong key: status {error.status_code}")
        ok("anthropic wrong key", f"AuthenticationError {error.status_code}")
    else:
        raise SystemExit("FAILED: anthropic request with a wrong key succeeded")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: check.py BASE_URL CLIENT_KEY")
    base, key = sys.argv[1].rstrip("/"), sys.argv[2]
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__} against {base}", flush=True)
    try:
        check_openai(base, key)
        check_anthropic(base, key)
    except (openai.OpenAIError, anthropic.AnthropicError) as error:
        traceback.print_exc()
        raise SystemExit(f"FAILED: unexpected {type(error).__module__}.{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
