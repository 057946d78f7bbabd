"""The official OpenAI and Anthropic Python SDKs against `freeroute serve` (DESIGN §8).

Run by the ignored tests in tests/it/serve_sdk.rs with the SDK venv's python
(FREEROUTE_SDK_PYTHON; .ci/run makes it under ~/.cache/freeroute-ci/sdk):

    python tests/sdk/clients.py fake  http://127.0.0.1:PORT   # serve in front of the fake
    python tests/sdk/clients.py llama http://127.0.0.1:PORT   # serve in front of llama.cpp

Each case prints one line; any SDK error or wrong answer fails the run (exit 1). The
answers the fake gives are fixed by the Rust test that starts it.
"""

import json
import sys
import traceback

import anthropic
import openai

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "born": {"type": "integer"}},
    "required": ["name", "born"],
    "additionalProperties": False,
}


def expect(what, ok, got):
    if not ok:
        raise AssertionError(f"{what}: got {got!r}")


def openai_cases(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-client-own-key", max_retries=0, timeout=60)
    user = [{"role": "user", "content": "Say hello"}]

    def chat():
        r = client.chat.completions.create(model="auto", messages=user)
        expect("content", r.choices[0].message.content == "Hello from the fake", r)
        expect("finish_reason", r.choices[0].finish_reason == "stop", r)
        expect("model", r.model.endswith(":free"), r.model)

    def stream():
        chunks = list(client.chat.completions.create(model="auto", messages=user, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        expect("streamed text", text == "Hello from the fake", text)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        expect("finish", finish == ["stop"], finish)

    def tools():
        r = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
        )
        call = r.choices[0].message.tool_calls[0]
        expect("tool name", call.function.name == "get_weather", call)
        expect("arguments", json.loads(call.function.arguments) == {"city": "Paris"}, call)
        expect("finish", r.choices[0].finish_reason == "tool_calls", r)
        # The conversation goes on with the tool's result, as an agent would send it.
        r = client.chat.completions.create(
            model="auto",
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
        )
        expect("after the tool", r.choices[0].message.content is not None, r)

    def streamed_tools():
        chunks = list(
            client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
                stream=True,
            )
        )
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        args = "".join(tc.function.arguments or "" for tc in calls)
        expect("streamed tool call", json.loads(args) == {"city": "Paris"}, calls)

    def schema():
        r = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Ada Lovelace was born in 1815."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON, "strict": True},
            },
        )
        doc = json.loads(r.choices[0].message.content)
        expect("schema answer", doc == {"name": "Ada", "born": 1815}, doc)

    def image():
        r = client.chat.completions.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                }
            ],
        )
        expect("image answer", r.choices[0].message.content == "A single pixel", r)

    def unknown_model():
        try:
            client.chat.completions.create(model="no/such-model", messages=user)
        except openai.NotFoundError as e:
            expect("error code", e.body and e.body.get("code") == "model_not_found", e.body)
            return
        raise AssertionError("no error for an unknown model")

    def models():
        ids = [m.id for m in client.models.list()]
        expect("model list", ids[0] == "auto" and len(ids) > 1, ids)

    return [chat, stream, tools, streamed_tools, schema, image, unknown_model, models]


def anthropic_cases(base):
    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client-own-key", max_retries=0, timeout=60)
    user = [{"role": "user", "content": "Say hello"}]
    tools = [{"name": "get_weather", "description": "Weather of a city", "input_schema": WEATHER}]

    def message():
        m = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=user)
        expect("text", m.content[0].text == "Hello from the fake", m)
        expect("stop", m.stop_reason == "end_turn", m)
        expect("model", m.model.endswith(":free"), m.model)

    def stream():
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, system="Be brief.", messages=user) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        expect("streamed text", text == "Hello from the fake", text)
        expect("final", final.content[0].text == text and final.stop_reason == "end_turn", final)

    def tool_use():
        m = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            tools=tools,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        )
        use = [b for b in m.content if b.type == "tool_use"][0]
        expect("tool_use", use.name == "get_weather" and use.input == {"city": "Paris"}, m)
        expect("stop", m.stop_reason == "tool_use", m)
        m = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            tools=tools,
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [b.model_dump() for b in m.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
            ],
        )
        expect("after the tool", m.content and m.content[0].type == "text", m)

    def streamed_tool_use():
        with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=100,
            tools=tools,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        ) as s:
            final = s.get_final_message()
        use = [b for b in final.content if b.type == "tool_use"][0]
        expect("streamed tool_use", use.input == {"city": "Paris"}, final)

    def image():
        m = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]}},
                        {"type": "text", "text": "What is in this image?"},
                    ],
                }
            ],
        )
        expect("image answer", m.content[0].text == "A single pixel", m)

    return [message, stream, tool_use, streamed_tool_use, image]


def llama_cases(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    user = [{"role": "user", "content": "Say hello in one short sentence."}]

    def chat():
        r = client.chat.completions.create(model="auto", messages=user, max_tokens=16, temperature=0)
        expect("content", bool((r.choices[0].message.content or "").strip()), r)

    def stream():
        chunks = list(
            client.chat.completions.create(model="auto", messages=user, max_tokens=16, temperature=0, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        expect("streamed text", bool(text.strip()), chunks)

    return [chat, stream]


def main():
    mode, base = sys.argv[1], sys.argv[2].rstrip("/")
    cases = {
        "fake": lambda: openai_cases(base) + anthropic_cases(base),
        "llama": lambda: llama_cases(base),
    }[mode]()
    failed = 0
    for case in cases:
        name = f"{case.__qualname__.split('.')[0]}.{case.__name__}"
        try:
            case()
            print(f"ok {name}")
        except Exception:  # noqa: BLE001 - every failure is reported, then the run fails
            failed += 1
            print(f"FAILED {name}\n{traceback.format_exc()}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
