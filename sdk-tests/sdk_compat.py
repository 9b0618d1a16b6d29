"""Drive the gateway with the official OpenAI and Anthropic Python SDKs, unmodified.

Usage: python sdk_compat.py BASE_URL API_KEY
The gateway's providers point at the Rust mock provider; every call below goes through
authentication, rate limiting and forwarding exactly as production traffic would.
"""
import sys

import anthropic
import openai

base, key = sys.argv[1], sys.argv[2]
passed = failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


oai = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

raw = oai.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
)
completion = raw.parse()
check("openai chat", completion.choices[0].message.content is not None)
check("openai usage", completion.usage.total_tokens == 19, completion.usage)
check("openai rate-limit headers", raw.headers.get("x-ratelimit-limit") == "2000", raw.headers)

stream = oai.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True
)
pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
check("openai stream", len(pieces) >= 1, pieces)

models = oai.models.list()
check("openai models", len(models.data) >= 1)

try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="comp_" + "x" * 27, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    check("openai bad key raises", False)
except openai.AuthenticationError as error:
    check("openai bad key raises AuthenticationError", error.status_code == 401)

ant = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
message = ant.messages.create(
    model="claude-3-5-sonnet-latest", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
)
check("anthropic message", message.type == "message")
check("anthropic usage", message.usage.output_tokens == 5, message.usage)

with ant.messages.stream(
    model="claude-3-5-sonnet-latest", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("anthropic stream", len(text) > 0 and final.usage.output_tokens == 5, (text, final.usage))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
