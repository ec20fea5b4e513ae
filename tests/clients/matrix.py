#!/usr/bin/env python3
"""The client matrix: the published coding CLIs against cliproxy, as a new user runs them.

Claude Code, Codex CLI and Gemini CLI (pinned in package.json, installed by run.sh) each run
non-interactively, with nothing set but the gateway's base URL, a client key and what
docs/clients.md says the client needs, against three gateways:

- `demo`: `cliproxy-server demo`, the built-in mock provider answering in-process;
- `forwarding`: `cliproxy-server serve` with an OpenAI, an Anthropic and a Gemini provider in
  front of `fixture_upstream` (tests/src/bin/), whose canned replies the official SDKs parse;
- `translated`: the same providers, reached through model aliases from a client of another
  format, so that the gateway translates (SPEC §9): Claude Code to an OpenAI-format and to a
  Gemini-format provider, Codex CLI to an Anthropic-format one.

For each client and gateway it checks:

- reply: the client prints the provider's text;
- stream and usage: the client's machine-readable output has the text, arrived as a stream
  (the gateway's access line says `stream: true`; Claude Code and Gemini CLI also show the
  deltas), and the token usage the client reports is the one the gateway counted (non-zero);
- wrong key: the client fails with its own authentication error, within seconds, after one
  request (Codex 0.169 retries a 401 five times whatever the answer says: at most six);
  nothing reaches the provider;
- 429 (forwarding): the provider rate-limits the model once with `Retry-After: 2`; the client
  waits at least that long, comes back and gets the reply;
- tool turn (translated): the provider answers with a call of the client's shell tool (in its
  own format; the gateway translates it), the client runs it, sends the result back (the
  fixture logs that the request carried it) and prints the provider's answer, which quotes the
  tool's output.

It prints a results table (markdown) and, with --table FILE, writes it there. It also checks
that docs/clients.md names the pinned versions, so that a version bump updates the docs.

Usage: matrix.py --server BIN --fixture BIN --clients DIR [--table FILE] [--targets NAMES]
(DIR is the npm prefix with node_modules/.bin/{claude,codex,gemini}; NAMES a comma-separated
subset of demo,forwarding,translated, all by default).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Say hello"
# What the mocks say: the built-in mock (mock.rs) names the model; the fixtures
# (`canned` in tests/src/lib.rs, served by fixture_upstream) send five words.
DEMO_TEXT = "Hello from the cliproxy mock provider. This deterministic reply for model {model}"
FIXTURE_TEXT = "Hello from the fixture upstream"
# A client run that takes longer than this has hung.
RUN_TIMEOUT = 120
# A tool turn takes about a second. Codex has no turn limit: one that never gets the tool's
# result back calls the tool again and again, until this.
TOOL_TIMEOUT = 45
# A wrong key is reported "in seconds": generous for a loaded machine, far below the minutes
# of retries a client spends on an answer that does not say to stop.
WRONG_KEY_SECONDS = 30
# fixture_upstream's 429 for a `*ratelimit-once*` model (RETRY_AFTER_SECONDS there).
RETRY_AFTER_MS = 2000
RATE_LIMITED_SUFFIX = "ratelimit-once"
# An upstream model whose name holds this takes a tool-using turn in fixture_upstream
# (TOOL_MARK there): it calls the client's shell tool, which prints TOOL_OUTPUT, and then
# answers TOOL_SAID followed by the tool's output.
TOOL_MARK = "toolcall"
TOOL_PROMPT = "Run the shell command the tool call asks for, then say what it printed."
TOOL_SAID = "Tool said:"
TOOL_OUTPUT = "cliproxy-tool-ok"
# How long to wait for a log line the gateway writes when the answer's body has ended: the
# client may exit before it is written. A bounded poll: a file gives no event to wait on.
LOG_WAIT = 10.0
WRONG_KEY = "cpk-wrong-key-for-the-client-matrix-000000"


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


# --- the gateways' logs ------------------------------------------------------------------

def parse_access_line(line):
    """An access line (`msg: request`) as a dict, from `serve`'s JSON or the demo's text."""
    line = line.strip()
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        return entry if entry.get("msg") == "request" else None
    match = re.match(r"^\S+ (INFO|WARN|ERRO|DEBG) request, (.*)$", line)
    if not match:
        return None
    entry = {}
    for key, value in re.findall(r"(\w+): ([^,]*)(?:, |$)", match.group(2)):
        if value == "None":
            value = None
        elif value in ("true", "false"):
            value = value == "true"
        elif re.fullmatch(r"\d+", value):
            value = int(value)
        entry[key] = value
    return entry


class Log:
    """A process's log file, read from a mark onwards."""

    def __init__(self, path):
        self.path = path

    def mark(self):
        return self.path.stat().st_size if self.path.exists() else 0

    def lines_since(self, mark):
        with open(self.path, "rb") as file:
            file.seek(mark)
            return file.read().decode("utf-8", "replace").splitlines()

    def access_since(self, mark):
        return [e for e in map(parse_access_line, self.lines_since(mark)) if e]

    def json_since(self, mark):
        entries = []
        for line in self.lines_since(mark):
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
        return entries

    def wait_access(self, mark, predicate, count=1):
        deadline = time.monotonic() + LOG_WAIT
        while True:
            found = [e for e in self.access_since(mark) if predicate(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


# --- the clients ---------------------------------------------------------------------------

class Client:
    name = ""
    package = ""
    binary = ""

    def __init__(self, prefix):
        self.path = str(prefix / "node_modules" / ".bin" / self.binary)
        with open(prefix / "node_modules" / self.package / "package.json") as file:
            self.version = json.load(file)["version"]

    def home(self, base, key, extra):
        """A fresh HOME with the client's settings (and `extra`, what a target adds to them);
        returns (home, environment)."""
        home = Path(tempfile.mkdtemp(prefix=f"cliproxy-matrix-{self.binary}-"))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_", "CODEX_", "CLAUDE_"))}
        env["HOME"] = str(home)
        env.update(self.settings(home, base, key, extra))
        return home, env

    def run(self, target, args, key=None, timeout=RUN_TIMEOUT):
        """Runs the client against `target` (with `key` instead of the target's, if given)."""
        home, env = self.home(target.base, key or target.key, target.settings.get(self.binary))
        started = time.monotonic()
        try:
            done = subprocess.run([self.path, *args], env=env, cwd=home, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        return done, time.monotonic() - started


class ClaudeCode(Client):
    name, package, binary = "Claude Code", "@anthropic-ai/claude-code", "claude"
    api_path = "/v1/messages"

    def settings(self, home, base, key, extra):
        return {"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": key, **(extra or {})}

    def text_args(self, model):
        return ["-p", PROMPT, "--model", model]

    def stream_args(self, model):
        return ["-p", PROMPT, "--model", model, "--output-format", "stream-json", "--verbose",
                "--include-partial-messages"]

    def tool_args(self, model):
        # `-p` has no one to ask for a permission: the shell tool is allowed up front. The turn
        # takes two requests; a few more turns are allowed, not an endless loop if the tool's
        # result never gets back to the provider.
        return ["-p", TOOL_PROMPT, "--model", model, "--allowedTools", "Bash", "--max-turns", "4"]

    def parse_stream(self, stdout):
        """(text, deltas, (input, output) tokens) from the stream-json output."""
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        deltas = [e for e in events if e.get("type") == "stream_event"
                  and e["event"].get("type") == "content_block_delta"
                  and e["event"]["delta"].get("type") == "text_delta"]
        results = [e for e in events if e.get("type") == "result"]
        check(len(results) == 1, f"one result event expected: {stdout[-2000:]}")
        usage = results[0]["usage"]
        return results[0]["result"], len(deltas), (usage["input_tokens"], usage["output_tokens"])


class Codex(Client):
    name, package, binary = "Codex CLI", "@openai/codex", "codex"
    api_path = "/v1/responses"

    def settings(self, home, base, key, extra):
        # Codex 0.169 does not read OPENAI_BASE_URL: a provider in its config (docs/clients.md).
        # `extra` is more of the config, its top-level keys first.
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(
            f'model_provider = "cliproxy"\n{extra or ""}\n[model_providers.cliproxy]\nname = "cliproxy"\n'
            f'base_url = "{base}/v1"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"\n')
        return {"OPENAI_API_KEY": key}

    def text_args(self, model):
        return ["exec", "--skip-git-repo-check", "-m", model, PROMPT]

    def stream_args(self, model):
        return ["exec", "--json", "--skip-git-repo-check", "-m", model, PROMPT]

    def tool_args(self, model):
        # `codex exec` never asks for approval; the default read-only sandbox runs the command.
        return ["exec", "--skip-git-repo-check", "-m", model, TOOL_PROMPT]

    def parse_stream(self, stdout):
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        texts = [e["item"]["text"] for e in events if e.get("type") == "item.completed"
                 and e["item"].get("type") == "agent_message"]
        turns = [e for e in events if e.get("type") == "turn.completed"]
        check(len(texts) == 1 and len(turns) == 1, f"one message and one turn expected: {stdout[-2000:]}")
        usage = turns[0]["usage"]
        # `codex exec --json` shows no deltas: the access line says whether it streamed.
        return texts[0], None, (usage["input_tokens"], usage["output_tokens"])


class GeminiCli(Client):
    name, package, binary = "Gemini CLI", "@google/gemini-cli", "gemini"
    api_path = ":streamGenerateContent"

    def settings(self, home, base, key, extra):
        (home / ".gemini").mkdir()
        (home / ".gemini" / "settings.json").write_text(
            json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
        # Headless in a directory it was not told to trust, Gemini CLI exits 55 without this.
        return {"GOOGLE_GEMINI_BASE_URL": base, "GEMINI_API_KEY": key,
                "GEMINI_CLI_TRUST_WORKSPACE": "true"}

    def text_args(self, model):
        return ["-p", PROMPT, "-m", model]

    def stream_args(self, model):
        return ["-p", PROMPT, "-m", model, "--output-format", "stream-json"]

    def parse_stream(self, stdout):
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        deltas = [e["content"] for e in events if e.get("type") == "message"
                  and e.get("role") == "assistant" and e.get("delta")]
        results = [e for e in events if e.get("type") == "result"]
        check(len(results) == 1 and results[0].get("status") == "success",
              f"one successful result expected: {stdout[-2000:]}")
        stats = results[0]["stats"]
        return "".join(deltas), len(deltas), (stats["input_tokens"], stats["output_tokens"])


# --- the checks ----------------------------------------------------------------------------

class Target:
    """A gateway the clients are pointed at, and the model each client asks it for (a client
    not in `models` is not run against it). `upstream` maps a translated target's aliases to
    the upstream models they stand for; `settings` holds what a client needs on this target
    beyond its usual settings (by client binary)."""

    def __init__(self, name, base, key, log, text, models, fixture_log=None, upstream=None,
                 settings=None):
        self.name, self.base, self.key, self.log = name, base, key, log
        self.text, self.models, self.fixture_log = text, models, fixture_log
        self.upstream, self.settings = upstream, settings or {}


def described(done):
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


def served(client, model):
    return lambda e: e.get("model") == model and client.api_path in str(e.get("path"))


def check_reply(client, target):
    model = target.models[client.binary]
    mark = target.log.mark()
    done, seconds = client.run(target, client.text_args(model))
    want = target.text.format(model=model)
    check(done.returncode == 0 and want in done.stdout,
          f"{client.name} on {target.name}: no reply containing {want!r}: {described(done)}")
    lines = target.log.wait_access(mark, served(client, model))
    check(len(lines) == 1 and lines[0]["status"] == 200,
          f"{client.name} on {target.name}: one answered request expected, the access log has {lines}")
    return f"yes ({seconds:.1f} s)"


def check_stream(client, target):
    model = target.models[client.binary]
    mark = target.log.mark()
    done, _ = client.run(target, client.stream_args(model))
    check(done.returncode == 0, f"{client.name} on {target.name}, streamed: {described(done)}")
    text, deltas, usage = client.parse_stream(done.stdout)
    want = target.text.format(model=model)
    check(want in text, f"{client.name} on {target.name}: streamed text {text!r}, expected {want!r}")
    check(deltas is None or deltas >= 2,
          f"{client.name} on {target.name}: the reply came in {deltas} delta(s), not as a stream")
    lines = target.log.wait_access(mark, served(client, model))
    check(len(lines) == 1 and lines[0]["status"] == 200 and lines[0].get("stream") is True,
          f"{client.name} on {target.name}: one streamed answer expected, the access log has {lines}")
    counted = (lines[0]["input_tokens"], lines[0]["output_tokens"])
    check(usage == counted and all(n > 0 for n in usage),
          f"{client.name} on {target.name}: the client reports usage {usage}, the gateway counted {counted}")
    shown = f"{deltas} deltas" if deltas is not None else "SSE"
    return f"yes ({shown}, {usage[0]}/{usage[1]} tokens)"


def check_wrong_key(client, target):
    model = target.models[client.binary]
    mark = target.log.mark()
    fixture_mark = target.fixture_log.mark() if target.fixture_log else None
    done, seconds = client.run(target, client.text_args(model), key=WRONG_KEY)
    output = done.stdout + done.stderr
    check(done.returncode != 0, f"{client.name} on {target.name}: a wrong key did not fail: {described(done)}")
    check(re.search(r"401|authenticat|invalid client key", output, re.IGNORECASE),
          f"{client.name} on {target.name}: no authentication error shown: {described(done)}")
    check(seconds < WRONG_KEY_SECONDS,
          f"{client.name} on {target.name}: a wrong key took {seconds:.1f} s to report")
    refused = target.log.wait_access(mark, lambda e: e.get("status") == 401)
    # Only Codex retries a 401 (five times, by its own policy): the others stop at once.
    allowed = 6 if isinstance(client, Codex) else 1
    check(1 <= len(refused) <= allowed,
          f"{client.name} on {target.name}: {len(refused)} refused requests, expected at most {allowed}")
    check(all(e.get("provider") is None for e in refused),
          f"{client.name} on {target.name}: a refused request reached a provider: {refused}")
    if fixture_mark is not None:
        reached = target.fixture_log.json_since(fixture_mark)
        check(not reached, f"{client.name} on {target.name}: the upstream saw {reached}")
    return f"yes ({len(refused)} request{'s' if len(refused) > 1 else ''}, {seconds:.1f} s)"


def check_rate_limited(client, target):
    # `claude-ratelimit-once`, `gpt-…`, `gemini-…`: routed by the providers' globs.
    model = target.models[client.binary].split("-")[0] + "-" + RATE_LIMITED_SUFFIX
    fixture_mark = target.fixture_log.mark()
    mark = target.log.mark()
    done, _ = client.run(target, client.text_args(model))
    check(done.returncode == 0 and FIXTURE_TEXT in done.stdout,
          f"{client.name}: no reply after a 429: {described(done)}")
    seen = [e for e in target.fixture_log.json_since(fixture_mark) if e.get("model") == model]
    statuses = [e["status"] for e in seen]
    check(statuses == [429, 200], f"{client.name}: upstream answers {statuses}, expected [429, 200]")
    waited = seen[1]["at_ms"] - seen[0]["at_ms"]
    # The fixture stamps a request when it arrives, so the gap is at least the client's wait.
    check(waited >= RETRY_AFTER_MS,
          f"{client.name}: came back after {waited} ms, before Retry-After ({RETRY_AFTER_MS} ms)")
    # The gateway rests the model until Retry-After has passed, so the upstream would see the
    # gap even from a client that came back at once: that client's early retries would be
    # refused by the gateway, and show here.
    answered = target.log.wait_access(mark, lambda e: e.get("model") == model, count=2)
    statuses = [e["status"] for e in answered]
    check(statuses == [429, 200],
          f"{client.name}: the gateway answered {statuses}, expected [429, 200]: the client came back early")
    return f"yes (came back after {waited / 1000:.1f} s)"


def first_few(entries, count=6):
    """Log entries for a failure message: the first few, and how many more there were."""
    more = f" and {len(entries) - count} more" if len(entries) > count else ""
    return f"{entries[:count]}{more}"


def check_tool_turn(client, target):
    # `claude-via-openai-toolcall` stands for `gpt-4o-mini-toolcall`: the mark reaches the
    # fixture, which then takes the tool-using turn.
    model = f"{target.models[client.binary]}-{TOOL_MARK}"
    upstream = target.upstream[model]
    fixture_mark = target.fixture_log.mark()
    mark = target.log.mark()
    try:
        done, seconds = client.run(target, client.tool_args(model), timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        # What the upstream saw tells why; the output so far goes with it.
        output = [o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                  for o in (expired.stdout, expired.stderr)]
        done = subprocess.CompletedProcess(expired.cmd, f"none: killed after {TOOL_TIMEOUT} s",
                                           *output)
        seconds = TOOL_TIMEOUT
    seen = [e for e in target.fixture_log.json_since(fixture_mark) if e.get("model") == upstream]
    check(seen, f"{client.name} on {target.name}: no request for {upstream} reached the upstream: "
          f"{described(done)}")
    calls = [index for index, e in enumerate(seen) if e.get("tool_call")]
    check(calls, f"{client.name} on {target.name}: the upstream never called a tool (no request "
          f"declared a shell tool it knows): upstream saw {first_few(seen)}: {described(done)}")
    returned = [e for e in seen[calls[0] + 1:] if e.get("tool_result")]
    check(returned and returned[0]["status"] == 200,
          f"{client.name} on {target.name}: no request after the tool call carried the tool's "
          f"result back (the upstream answered {len(calls)} tool call(s)): upstream saw {first_few(seen)}: "
          f"{described(done)}")
    said = re.search(re.escape(TOOL_SAID) + r".*" + re.escape(TOOL_OUTPUT), done.stdout, re.S)
    check(done.returncode == 0 and said,
          f"{client.name} on {target.name}: the final answer does not quote the tool's output "
          f"({TOOL_SAID!r} ... {TOOL_OUTPUT!r}): {described(done)}")
    lines = target.log.wait_access(mark, served(client, model), count=len(seen))
    check(len(lines) == len(seen) and all(e["status"] == 200 for e in lines),
          f"{client.name} on {target.name}: {len(seen)} answered requests expected, the access "
          f"log has {lines}")
    return f"yes ({seen[calls[0]]['tool_call']}, {len(seen)} requests, {seconds:.1f} s)"


# --- the gateways --------------------------------------------------------------------------

class Processes:
    def __init__(self, work):
        self.work, self.running = work, []

    def start(self, name, argv, env=None, stdin=None):
        out = open(self.work / f"{name}.out", "wb")
        err = open(self.work / f"{name}.err", "wb")
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=stdin, env=env)
        self.running.append((name, process))
        return process, self.work / f"{name}.out", self.work / f"{name}.err"

    def stop(self):
        for name, process in reversed(self.running):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.returncode not in (0, None):
                print(f"note: {name} exited with status {process.returncode}", file=sys.stderr)

    def dump(self):
        for path in sorted(self.work.glob("*.err")) + sorted(self.work.glob("*.out")):
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}", file=sys.stderr)


def wait_for(what, process, found):
    """Polls `found` until it returns something (30 s): the processes print when ready."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        check(process.poll() is None, f"{what} exited with status {process.returncode} before it was ready")
        time.sleep(0.1)
    raise Failed(f"{what} was not ready within 30 s")


def start_demo(processes, server):
    process, out, err = processes.start("demo", [server, "demo", "--port", "0"])
    text = wait_for("the demo", process,
                    lambda: out.read_text() if "client key:" in out.read_text() else None)
    base = re.search(r"^  base url: *(\S+)", text, re.M).group(1)
    key = re.search(r"^  client key: *(\S+)", text, re.M).group(1)
    models = {"claude": "mock-1", "codex": "mock-1", "gemini": "mock-1"}
    return Target("demo", base, key, Log(err), DEMO_TEXT, models)


def start_fixture(processes, fixture):
    """fixture_upstream, which the forwarding and translated gateways share: (url, its log)."""
    process, out, err = processes.start("fixture", [fixture], stdin=subprocess.PIPE)
    url = wait_for("fixture_upstream", process, lambda: out.read_text().strip())
    return url, Log(err)


def start_gateway(processes, server, work, name, key, providers):
    """`cliproxy-server serve` with `providers` (YAML lines), each holding a token in its
    vault; returns (base url, its log)."""
    config = work / f"{name}.yaml"
    config.write_text(f"""server: {{host: 127.0.0.1, port: 0, shutdown_timeout: 10s}}
auth:
  api_keys: [{{name: matrix, key: "{key}"}}]
  dir: "{work / f'{name}-auths'}"
logging: {{level: info, format: json}}
providers:
{providers}""")
    for provider in ("oa", "an", "ge"):
        subprocess.run([server, "--config", str(config), "vault", "add", "--provider", provider,
                        "--id", f"{provider}-1"], input=f"sk-client-matrix-{provider}-token\n",
                       text=True, check=True, capture_output=True)
    # As root (CI), the full sandbox needs saying so.
    env = dict(os.environ, CLIPROXY_SANDBOX__REQUIRE_NON_ROOT="false")
    process, _, err = processes.start(name, [server, "--config", str(config), "serve"], env=env)

    def listening():
        for entry in Log(err).json_since(0):
            if entry.get("msg") == "listening":
                return entry["addr"]
        return None

    addr = wait_for(f"the {name} gateway", process, listening)
    return f"http://{addr}", Log(err)


MATRIX_KEY = "cpk-client-matrix-key-3f9a0c1d5e7b2486"


def start_forwarding(processes, server, fixture_url, fixture_log, work):
    base, log = start_gateway(processes, server, work, "gateway", MATRIX_KEY, f"""\
  oa: {{type: openai, base_url: "{fixture_url}", models: ["gpt-*"]}}
  an: {{type: claude, base_url: "{fixture_url}", models: ["claude-*"]}}
  ge: {{type: gemini, base_url: "{fixture_url}", models: ["gemini-*"]}}
""")
    models = {"claude": "claude-sonnet-4", "codex": "gpt-4o-mini", "gemini": "gemini-2.0-flash"}
    return Target("forwarding", base, MATRIX_KEY, log, FIXTURE_TEXT, models, fixture_log=fixture_log)


# The translated pairs: (target name, provider, provider type, the client and the alias it asks
# for, the upstream model the alias stands for). Each alias has a `-toolcall` twin for the
# tool-using turn.
TRANSLATED = [
    ("translated → OpenAI chat", "oa", "openai", "claude", "claude-via-openai", "gpt-4o-mini"),
    ("translated → Gemini", "ge", "gemini", "claude", "claude-via-gemini", "gemini-2.0-flash"),
    ("translated → Anthropic", "an", "claude", "codex", "gpt-via-claude", "claude-sonnet-4"),
]


# Codex declares two tools no other format has: OpenAI's hosted web search (`web_search`) and
# its sub-agent tools grouped in a `namespace`. The gateway refuses a request with either for a
# provider of another format (400 naming the tool), so Codex is told not to send them
# (docs/clients.md).
CODEX_FOREIGN_PROVIDER = 'web_search = "disabled"\n\n[agents]\nenabled = false\n'


def start_translated(processes, server, fixture_url, fixture_log, work):
    """One gateway whose providers serve only aliases, each asked for by a client of another
    format; one target per translated pair."""
    providers = ""
    for _, provider, kind, _, alias, upstream in TRANSLATED:
        aliases = (f"{{name: {alias}, upstream: {upstream}}}, "
                   f"{{name: {alias}-{TOOL_MARK}, upstream: {upstream}-{TOOL_MARK}}}")
        providers += f'  {provider}: {{type: {kind}, base_url: "{fixture_url}", models: [{aliases}]}}\n'
    base, log = start_gateway(processes, server, work, "translated", MATRIX_KEY, providers)
    targets = []
    for name, _, _, client, alias, upstream in TRANSLATED:
        names = {alias: upstream, f"{alias}-{TOOL_MARK}": f"{upstream}-{TOOL_MARK}"}
        targets.append(Target(name, base, MATRIX_KEY, log, FIXTURE_TEXT, {client: alias},
                              fixture_log=fixture_log, upstream=names,
                              settings={"codex": CODEX_FOREIGN_PROVIDER}))
    return targets


def check_docs(clients):
    docs = (ROOT / "docs" / "clients.md").read_text()
    for client in clients:
        named = f"`{client.package}` {client.version}"
        check(named in docs, f"docs/clients.md does not name {named}: update it with the pinned version")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="the cliproxy-server binary")
    parser.add_argument("--fixture", required=True, help="the fixture_upstream binary")
    parser.add_argument("--clients", required=True, type=lambda p: Path(p).resolve(), help="npm prefix holding the CLIs")
    parser.add_argument("--table", type=Path, help="write the results table (markdown) here")
    parser.add_argument("--targets", default="demo,forwarding,translated",
                        help="the gateways to run against (comma-separated), all by default")
    args = parser.parse_args()
    wanted = set(args.targets.split(","))
    if not wanted <= {"demo", "forwarding", "translated"}:
        parser.error(f"unknown targets in {args.targets!r}")

    clients = [ClaudeCode(args.clients), Codex(args.clients), GeminiCli(args.clients)]
    work = Path(tempfile.mkdtemp(prefix="cliproxy-matrix-"))
    processes = Processes(work)
    rows, failures = [], []
    try:
        check_docs(clients)
        targets = []
        if "demo" in wanted:
            targets.append(start_demo(processes, args.server))
        if wanted & {"forwarding", "translated"}:
            fixture_url, fixture_log = start_fixture(processes, args.fixture)
        if "forwarding" in wanted:
            targets.append(start_forwarding(processes, args.server, fixture_url, fixture_log, work))
        if "translated" in wanted:
            targets += start_translated(processes, args.server, fixture_url, fixture_log, work)
        for target in targets:
            for client in [c for c in clients if c.binary in target.models]:
                checks = [("reply", check_reply), ("stream + usage", check_stream)]
                if target.upstream:
                    checks.append(("tool turn", check_tool_turn))
                else:
                    checks.append(("wrong key", check_wrong_key))
                if target.fixture_log and not target.upstream:
                    checks.append(("429 + Retry-After", check_rate_limited))
                row = {"client": f"{client.name} {client.version}", "gateway": target.name}
                for column, run in checks:
                    try:
                        row[column] = run(client, target)
                        print(f"ok {client.name} / {target.name} / {column}: {row[column]}", flush=True)
                    except (Failed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as error:
                        row[column] = "**FAILED**"
                        failures.append(f"{client.name} / {target.name} / {column}: {error}")
                        print(f"FAILED {failures[-1]}", flush=True)
                rows.append(row)
    except Failed as error:
        failures.append(str(error))
    finally:
        processes.stop()
    columns = ["client", "gateway", "reply", "stream + usage", "wrong key", "429 + Retry-After",
               "tool turn"]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        table.append("| " + " | ".join(row.get(c, "n/a") for c in columns) + " |")
    print("\n" + "\n".join(table))
    if args.table:
        args.table.write_text("\n".join(table) + "\n")
    if failures:
        processes.dump()
        print("\nFAILED:\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
