"""`mrdabak chat`: talk to a model in the terminal and watch the order state it keeps.

``mrdabak chat --model promoted [--constrained] [--now 2026-12-01T15:00:00+09:00]``

Each line you type is the customer's turn; the reply's message is printed, then the order state
as the app would read it (or a note that the app could not parse the reply, with the raw text).
The conversation's now is fixed when it starts (``--now``, default the current time in Seoul),
like a logged session's ``created_at``. ``/reset`` starts over, ``/quit`` or end of input ends.
Works with piped stdin too (one customer turn per line), which is how it is tested.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TextIO

from mrdabak_pipeline.cli.predict import add_model_args, generator_from_args, model_from_args
from mrdabak_pipeline.core import prompts
from mrdabak_pipeline.core.evaluation import predict

QUIT, RESET = "/quit", "/reset"


def _start(now: datetime) -> predict.Conversation:
    return predict.Conversation(id="chat", now=now)


def run_chat(
    generator: predict.ChatGenerator,
    choice: predict.PromptChoice,
    now: datetime,
    stdin: TextIO,
    stdout: TextIO,
) -> int:
    """The read-reply-show loop; returns the number of replies the app could not parse."""
    interactive = stdin.isatty()
    conv = _start(now)
    unparsed = 0
    print(f"[{prompts.now_line(now)} · prompt {choice.prompt_id} · {RESET} to start over, {QUIT} to end]",
          file=stdout)
    while True:
        if interactive:
            print("고객> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text == QUIT:
            break
        if text == RESET:
            conv = _start(now)
            print("[new conversation]", file=stdout)
            continue
        try:
            raw, parsed = predict.chat_turn(generator, choice, conv, text)
        except RuntimeError as exc:  # the endpoint failed this request: say so, keep the conversation
            print(f"[error] {exc}", file=stdout)
            continue
        if parsed is None:
            unparsed += 1
            print("상담원: [the app could not parse this reply]", file=stdout)
            print(f"  raw: {raw}", file=stdout)
        else:
            print(f"상담원: {parsed['message']}", file=stdout)
            state = predict.order_state_lines(parsed["orderState"])
            print("  order state:" + ("" if state else " (empty)"), file=stdout)
            for row in state:
                print(f"    {row}", file=stdout)
        stdout.flush()
    return unparsed


def _run(args: argparse.Namespace) -> int:
    spec, choice = model_from_args(args)
    now = prompts.parse_now(args.now) if args.now else datetime.now(prompts.SEOUL)
    generator = generator_from_args(spec, args)
    try:
        run_chat(generator, choice, now, sys.stdin, sys.stdout)
    finally:
        generator.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``chat`` (sets ``func(args) -> int``)."""
    p = subparsers.add_parser("chat", help="talk to a model in the terminal; shows the order state per turn")
    add_model_args(p)
    p.add_argument("--now", default=None, help="the conversation's moment (ISO 8601; default: now in Seoul)")
    p.set_defaults(func=_run)
