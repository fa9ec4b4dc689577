"""A Python-expression calculator tool for GSM8K-style problems.

The student may call ``calculator`` with an arithmetic ``expression`` as often as it likes (up to
``--max-turns``); each call is answered with the value or a one-line error; a turn without a tool call is its
final answer, and the conversation ends with the GSM8K grader's verdict on it (``numeric_match``) as the reward.

Tool calls use the chat template's own format: Qwen3's ``<tool_call>{"name": "calculator", "arguments":
{"expression": "3*(4+5)"}}</tool_call>`` (the tool's schema reaches the template as ``tools=``), or ``calc: 3*(4+5)``
for a template without tool support (``mentor.envs.base.tool_call_format``).

No code runs: where the code grader runs a program in a guarded subprocess (``mentor.tasks.graders.run_python``),
the calculator accepts far less. The expression is parsed with ``ast`` and only numbers, ``+ - * / // % **``,
unary signs and parentheses are evaluated, by a walk over the tree (never ``eval``); names, calls, attributes,
subscripts and everything else are refused, as are powers and values too large to compute quickly.
"""

from __future__ import annotations

import ast
import math
import operator

from mentor.envs.base import EnvReply, EnvSpec, parse_tool_call, register_env, tool_call_format
from mentor.tasks.graders import numeric_match

MAX_EXPRESSION_CHARS = 200
MAX_MAGNITUDE = 1e30  # larger intermediate values are refused (no 10**10**10)

TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression (numbers, + - * / // % ** and parentheses) and return "
        "its value.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "for example 3*(4+5)/2"}},
            "required": ["expression"],
        },
    },
}
PLAIN_NAME = "calc"

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    pass


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression, or ``CalculatorError`` with a one-line reason."""
    expression = str(expression).strip()
    if not expression:
        raise CalculatorError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise CalculatorError("not an arithmetic expression") from None
    return _value(tree.body)


def _value(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (
            abs(right) > 64 or (abs(left) > 1 and abs(right) * math.log10(abs(left)) > 30)
        ):
            raise CalculatorError("power too large")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except (OverflowError, TypeError):  # complex results of negative ** fractional are TypeErrors below
            raise CalculatorError("value out of range") from None
    raise CalculatorError(f"only numbers and + - * / // % ** ( ) are allowed, not {type(node).__name__}")


def _bounded(value) -> int | float:
    if (
        isinstance(value, complex)
        or (isinstance(value, float) and not math.isfinite(value))
        or abs(value) > MAX_MAGNITUDE
    ):
        raise CalculatorError("value out of range")
    return value


def format_value(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else f"{value:.10g}"


def calculate(expression: str) -> str:
    """What the tool returns: the value, or ``error: <reason>`` on one line."""
    try:
        return format_value(evaluate(expression))
    except CalculatorError as error:
        return f"error: {error}"


class Calculator:
    def __init__(self, tokenizer):
        self.format = tool_call_format(tokenizer)
        self.tools = [TOOL] if self.format == "hermes" else None
        self.reference = None

    def reset(self, example) -> list[dict]:
        self.reference = example.reference
        return [{"role": "user", "content": example.text}]

    def step(self, turn: str) -> EnvReply:
        call = parse_tool_call(turn, self.format)
        if call is not None and self.format == "plain" and call[0] != PLAIN_NAME:
            call = None  # "answer: 42" is an answer, not a call
        if call is None:
            reward = numeric_match(turn, self.reference) if self.reference is not None else None
            return EnvReply("done", reward=reward)
        name, arguments = call
        if self.format == "plain":
            return EnvReply("tool_result", calculate(arguments))
        if name != TOOL["function"]["name"]:
            return EnvReply("tool_result", f"error: unknown tool {name!r}: the tool is calculator")
        if not isinstance(arguments, dict) or "expression" not in arguments:
            return EnvReply("tool_result", 'error: call calculator with {"expression": "..."}')
        return EnvReply("tool_result", calculate(arguments["expression"]))


register_env(
    EnvSpec("calculator", Calculator, "a Python-expression calculator tool; the final answer is graded like GSM8K")
)
