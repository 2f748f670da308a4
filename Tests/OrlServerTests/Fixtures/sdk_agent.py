#!/usr/bin/env python3
"""An agent written against the official OpenAI and Anthropic Python SDKs, pointed at orl's
gateway the way an agent under orl is (OPENAI_BASE_URL, ANTHROPIC_BASE_URL and the agent's
token as both keys). Prints one JSON line: what the SDKs saw.

    sdk_agent.py calls OPENAI_MODEL ANTHROPIC_MODEL   each API once, plain and streamed
    sdk_agent.py flood API MODEL CLIENTS CALLS        CLIENTS concurrent clients, CALLS each
    sdk_agent.py serve                                those commands (after the environment) a line each
"""
import asyncio
import json
import os
import sys

import anthropic
import openai


def openai_client(cls=openai.OpenAI):
    return cls(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"], max_retries=0, timeout=20)


def anthropic_client(cls=anthropic.Anthropic):
    return cls(base_url=os.environ["ANTHROPIC_BASE_URL"], api_key=os.environ["ANTHROPIC_API_KEY"], max_retries=0, timeout=20)


def calls(openai_model, anthropic_model):
    oa, an = openai_client(), anthropic_client()
    seen = []

    r = oa.responses.create(model=openai_model, input="Say hello", instructions="Be brief", max_output_tokens=50)
    seen.append({"api": "responses", "stream": False, "text": r.output_text,
                 "usage": [r.usage.input_tokens, r.usage.output_tokens]})

    text, usage = "", None
    for event in oa.responses.create(model=openai_model, input=[{"role": "user", "content": "Say hello"}], stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            usage = [event.response.usage.input_tokens, event.response.usage.output_tokens]
    seen.append({"api": "responses", "stream": True, "text": text, "usage": usage})

    m = an.messages.create(model=anthropic_model, max_tokens=50, system="Be brief",
                           messages=[{"role": "user", "content": "Say hello"}])
    seen.append({"api": "messages", "stream": False, "text": m.content[0].text,
                 "usage": [m.usage.input_tokens, m.usage.output_tokens]})

    with an.messages.stream(model=anthropic_model, max_tokens=50,
                            messages=[{"role": "user", "content": "Say hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    seen.append({"api": "messages", "stream": True, "text": text,
                 "usage": [final.usage.input_tokens, final.usage.output_tokens]})

    e = oa.embeddings.create(model=openai_model, input="a sentence to embed")
    seen.append({"api": "embeddings", "stream": False, "dimensions": len(e.data[0].embedding),
                 "usage": [e.usage.prompt_tokens, 0]})
    e = oa.embeddings.create(model=openai_model, input=["one", "two", "three"], encoding_format="float")
    seen.append({"api": "embeddings", "stream": False, "count": len(e.data), "usage": [e.usage.prompt_tokens, 0]})

    # Refusals come back as the SDKs' own exceptions.
    try:
        an.messages.create(model="nowhere/m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    except anthropic.PermissionDeniedError as error:
        seen.append({"refused": "messages", "status": error.status_code, "message": error.message})
    try:
        oa.responses.create(model=openai_model, input="x", previous_response_id="resp_1")
    except openai.BadRequestError as error:
        seen.append({"refused": "responses", "status": error.status_code, "message": error.message})

    models = [m.id for m in oa.models.list()]
    claude = [m.id for m in an.models.list()]
    print(json.dumps({"calls": seen, "openai_models": models, "anthropic_models": claude}))


async def flood(api, model, clients, per_client):
    oa, an = openai_client(openai.AsyncOpenAI), anthropic_client(anthropic.AsyncAnthropic)

    async def one(index):
        stream = index % 2 == 1
        if api == "responses":
            if stream:
                usage = None
                async for event in await oa.responses.create(model=model, input="Say hello", stream=True, max_output_tokens=20):
                    if event.type == "response.completed":
                        usage = event.response.usage
                return [usage.input_tokens, usage.output_tokens]
            r = await oa.responses.create(model=model, input="Say hello", max_output_tokens=20)
            return [r.usage.input_tokens, r.usage.output_tokens]
        if api == "messages":
            if stream:
                async with an.messages.stream(model=model, max_tokens=20, messages=[{"role": "user", "content": "Say hello"}]) as s:
                    final = await s.get_final_message()
                return [final.usage.input_tokens, final.usage.output_tokens]
            m = await an.messages.create(model=model, max_tokens=20, messages=[{"role": "user", "content": "Say hello"}])
            return [m.usage.input_tokens, m.usage.output_tokens]
        e = await oa.embeddings.create(model=model, input=["Say hello", "twice"])
        return [e.usage.prompt_tokens, 0]

    async def client(index):
        outcomes = []
        for call in range(per_client):
            try:
                outcomes.append({"ok": await one(index * per_client + call)})
            except (openai.RateLimitError, anthropic.RateLimitError) as error:
                outcomes.append({"refused": error.status_code})
            except (openai.APIStatusError, anthropic.APIStatusError) as error:
                outcomes.append({"error": error.status_code, "message": str(error)})
        return outcomes

    results = await asyncio.gather(*(client(i) for i in range(clients)))
    print(json.dumps({"outcomes": [o for r in results for o in r]}))


def run(arguments):
    if arguments[0] == "calls":
        calls(arguments[1], arguments[2])
    else:
        asyncio.run(flood(arguments[1], arguments[2], int(arguments[3]), int(arguments[4])))


def serve():
    """One command per line of standard input (a JSON array: the environment's changes, then
    the arguments above), one line of answer each ({"out": what it printed} or {"failed": the traceback}): the tests
    keep this interpreter, which spent two seconds of CPU importing the two SDKs."""
    import contextlib
    import io
    import traceback
    for line in sys.stdin:
        printed = io.StringIO()
        try:
            environment, *arguments = json.loads(line)
            os.environ.update(environment)
            with contextlib.redirect_stdout(printed):
                run(arguments)
            answer = {"out": printed.getvalue()}
        except BaseException:  # reported, and the next command still served
            answer = {"failed": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve() if sys.argv[1] == "serve" else run(sys.argv[1:])
