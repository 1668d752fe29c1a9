#!/usr/bin/env python3
"""Writes golden.json: chat templates rendered by Jinja2 itself, configured as Hugging Face's
apply_chat_template configures it (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the loopcontrols
extension, raise_exception, and its own tojson: json.dumps with ensure_ascii=False). The front door's
interpreter must reproduce every `expected` byte for byte and fail where Jinja raised
(tests/scheduler/frontdoor/chat_template_test.cc). Besides the four templates and the inline cases below, every
case of conversations.json (the differential test's, see README.md) is rendered here too, so the newer
templates have a Python oracle even where node is missing.

    python3 tests/data/chat_templates/make_golden.py   # jinja2 3.1 (Debian 12: python3-jinja2)
"""
import json
import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' chat-template tojson (Jinja's own escapes HTML characters and sorts keys).
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
ENV.globals["raise_exception"] = raise_exception
ENV.filters["tojson"] = tojson

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  Hello, how are you?\n"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works! — ünïcödé 🚀"},
]

INLINE = {
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    "indented_blocks": "A\n    {% if true %}\n    x\n    {% endif %}\nB{# c #}\n  {# d #}\nC",
    "minus_trims": "a  {{- ' b ' -}}  \n c {#- note -#} d\n{%- if true -%}\n  e  \n{%- endif %}",
    "plus_keeps": "a\n  {%+ if true %}b{% endif +%}\nc",
    "expressions": "{% set n = 0 %}{% for m in messages %}{% set n = n + 1 %}{{ loop.index }}/{{ loop.length }}"
                   "{% if loop.first %}F{% elif loop.last %}L{% else %}M{% endif %}{{ m.role[0] | upper }}"
                   "{{ ',' if not loop.last }}{% endfor %};n={{ n }};{{ messages | length }};{{ messages[-1]['content'] | trim }};"
                   "{{ 'x' in 'yxz' }}{{ 'q' not in ['a'] }};{{ 7 // 2 }}{{ -7 % 3 }}{{ 'a' ~ 1 }};{{ missing is defined }}"
                   "{{ messages[1:] | length }}{% for x in [] %}no{% else %}empty{% endfor %};{{ none }}{{ true }}"
                   "{{ table is mapping }}{{ ('a' if false) is defined }}",
    "filter_binds_tighter_than_plus": "{{ [1, 2] + [3] | length }}",
    "items_and_join": "{% for k, v in table | items %}{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %};"
                      "{{ ['p', 'q', 'r'] | join('-') }}{{ messages | map(attribute='role') | join(',') if false }}",
    "unused_tools_branch": "{% if tools is defined %}{{ tools | tojson(indent=4) }}{{ x.strip() }}{% endif %}ok",
}

# The fallback of scheduler/frontdoor/chat_template.h (kFallbackChatTemplate).
FALLBACK = ("{{ bos_token }}{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")


def render(source, variables):
    try:
        return {"expected": ENV.from_string(source).render(**variables)}
    except Exception as error:  # TemplateError from raise_exception, TypeError from bad operands
        return {"error": str(error)}


def main():
    cases = []
    for model in ["llama3", "llama3.1", "qwen2", "mistral"]:
        with open(os.path.join(HERE, model, "tokenizer_config.json")) as f:
            config = json.load(f)
        for system in [True, False]:
            for generation in [True, False]:
                variables = {
                    "messages": CONVERSATION if system else CONVERSATION[1:],
                    "add_generation_prompt": generation,
                    "bos_token": config["bos_token"] or "",
                    "eos_token": config["eos_token"] or "",
                }
                case = {"name": f"{model} system={system} generation_prompt={generation}", "dir": model,
                        "variables": variables}
                case.update(render(config["chat_template"], variables))
                cases.append(case)
    with open(os.path.join(HERE, "conversations.json")) as f:
        spec = json.load(f)
    for model in spec["templates"]:
        with open(os.path.join(HERE, model, "tokenizer_config.json")) as f:
            config = json.load(f)
        for conversation in spec["conversations"]:
            if model not in conversation.get("only", [model]) or model in conversation.get("except", []):
                continue
            if conversation.get("no_date_string"):
                continue  # strftime_now: the current date, which a file cannot hold
            for generation in [False, True]:
                variables = dict(conversation["variables"], bos_token=config["bos_token"],
                                 eos_token=config["eos_token"], add_generation_prompt=generation,
                                 date_string="26 Jul 2024")
                case = {"name": f"{model} {conversation['name']} generation_prompt={generation}", "dir": model,
                        "variables": variables}
                case.update(render(config["chat_template"], variables))
                cases.append(case)
    short = {"messages": CONVERSATION[1:3], "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
             "table": {"a": 1, "b": "x"}}
    for name, source in INLINE.items():
        case = {"name": name, "template": source, "variables": short}
        case.update(render(source, short))
        cases.append(case)
    case = {"name": "fallback", "template": FALLBACK, "variables": short}
    case.update(render(FALLBACK, short))
    cases.append(case)
    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump({"jinja2": jinja2.__version__, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
