"""The toolbox: loading the operator's tools, the built-ins, and running calls the way the
agent does, so that every failure reaches the model as a tool result and never as a crash."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from learnloop.learning.toolbox import (
    BUILTIN,
    NO_TOOLS,
    Toolbox,
    ToolResult,
    ToolsError,
    load_tools,
)

ARITHMETIC_TOOLS = (
    Path(__file__).resolve().parents[1].parent / "shared/data/tool_arithmetic/tools.py"
)

GOOD_TOOLS = '''
    from os.path import join

    def add(a: int, b: int = 1) -> int:
        """Add two integers.

        Args:
            a: The first one.
            b: The second one.
        """
        return a + b

    def _helper(x: int) -> int:
        return x

    def undocumented(x: int) -> int:
        return x

    class Thing:
        """Not a tool: a class."""

    LIMIT = 3
'''


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def refused(specs: list[str], *words: str) -> str:
    """Assert that loading ``specs`` fails with one line naming every one of ``words``."""
    with pytest.raises(ToolsError) as caught:
        load_tools(specs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert all(w in message for w in words), message
    return message


@pytest.fixture
def builtins() -> Toolbox:
    return load_tools([BUILTIN])


def calc(toolbox: Toolbox, expression: str) -> ToolResult:
    return toolbox.run("calculator", json.dumps({"expression": expression}))


# --- loading ------------------------------------------------------------------------------


def test_the_arithmetic_benchmark_tools_load_by_path_and_multiply() -> None:
    if not ARITHMETIC_TOOLS.is_file():
        pytest.skip(f"the shared arithmetic task is not here: {ARITHMETIC_TOOLS}")
    toolbox = load_tools([str(ARITHMETIC_TOOLS)])
    assert toolbox.names() == ["calculate"]
    (schema,) = toolbox.schemas()
    parameters = schema["function"]["parameters"]
    assert parameters["required"] == ["expression"]
    assert parameters["properties"]["expression"]["type"] == "string"
    assert Path(toolbox.tools["calculate"].source).resolve() == ARITHMETIC_TOOLS.resolve()

    result = toolbox.run("calculate", '{"expression": "2824 * 82"}')
    assert (result.content, result.error) == ("231568", None)
    assert result.ms > 0


def test_only_documented_public_functions_defined_in_the_file_are_tools(tmp_path: Path) -> None:
    path = write(tmp_path, "tools.py", GOOD_TOOLS)
    toolbox = load_tools([str(path)])
    assert toolbox.names() == ["add"]  # not _helper, join, Thing or LIMIT
    assert len(toolbox.skipped) == 1
    assert "undocumented" in toolbox.skipped[0] and "docstring" in toolbox.skipped[0]
    assert toolbox.describe() == ["add(a, b=1) — Add two integers."]
    assert toolbox.run("add", '{"a": 2, "b": 3}').content == "5"
    assert toolbox.run("add", {"a": 2}).content == "3"


def test_a_dotted_module_name_loads_and_two_files_named_alike_do_not_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mytools"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(
        package,
        "text.py",
        '''
        def shout(text: str) -> str:
            """Say it loudly.

            Args:
                text: What to say.
            """
            return text.upper() + "!"
    ''',
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    write(other, "tools.py", GOOD_TOOLS)
    path_before = list(sys.path)

    toolbox = load_tools(["mytools.text", BUILTIN, str(write(tmp_path, "tools.py", GOOD_TOOLS))])
    assert toolbox.names() == ["shout", "calculator", "current_datetime", "add"]
    assert toolbox.tools["shout"].source == "mytools.text"
    assert toolbox.run("shout", {"text": "hi"}).content == "HI!"
    assert sys.path == path_before  # the file's folder was on it only while it loaded
    # The same source named twice counts once; another file's "add" is a clash.
    assert load_tools([BUILTIN, BUILTIN]).names() == ["calculator", "current_datetime"]
    refused([str(tmp_path / "tools.py"), str(other / "tools.py")], "add", "already defined")


def test_each_unusable_source_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = write(tmp_path, "broken.py", "x = 1\ny = undefined_name\n")
    message = refused([str(broken)], str(broken), "failed to import", "NameError", "undefined_name")
    assert "fix it" in message
    syntax = write(tmp_path, "syntax.py", "def f(:\n")
    refused([str(syntax)], str(syntax), "failed to import", "SyntaxError")
    exits = write(tmp_path, "exits.py", "raise SystemExit(3)\n")
    refused([str(exits)], str(exits), "failed to import", "SystemExit")

    empty = write(tmp_path, "empty.py", "def helper(x):\n    return x\n")
    refused([str(empty)], str(empty), "defines no tools", "helper", "type hint", "docstring")

    refused([str(tmp_path / "missing.py")], "missing.py", "no such file")
    refused([str(tmp_path)], str(tmp_path), "is a folder")
    refused([str(write(tmp_path, "notes.txt", "hi"))], "notes.txt", "not a .py file")
    refused(["no_such_package.tools"], "no_such_package.tools", "no file or module")
    refused(["builtin", "../nowhere"], "../nowhere", "no file or module")
    # A module that exists but imports a missing one failed to import; it is not "missing".
    write(tmp_path, "needs_missing.py", "import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refused(["needs_missing"], "needs_missing", "failed to import", "no_such_dependency_xyz")


def test_no_tools_is_empty() -> None:
    assert not NO_TOOLS and NO_TOOLS.names() == [] and NO_TOOLS.schemas() == []
    assert load_tools([]) == NO_TOOLS
    result = NO_TOOLS.run("calculator", "{}")
    assert result.error == "unknown tool" and "none" in result.content


# --- the built-ins ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "answer"),
    [
        ("2824 * 82", "231568"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("-(3 - 10) // 2", "3"),
        ("17 % 5 + +1", "3"),
        ("6 / 3", "2"),
        ("1 / 3", "0.333333333333"),
        ("0.1 + 0.2", "0.3"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("12345678901234567890 * 10", "123456789012345678900"),
    ],
)
def test_the_calculator_gets_arithmetic_right(
    builtins: Toolbox, expression: str, answer: str
) -> None:
    result = calc(builtins, expression)
    assert (result.content, result.error) == (answer, None)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("x + 1", ["names"]),
        ('__import__("os").system("true")', ["function calls"]),
        ("(1).real", ["attribute access"]),
        ("[1, 2]", ["only numbers"]),
        ("9 ** 9 ** 9", ["exponents above 100"]),
        ("10 ** 100 * 10", ["10**100"]),
        ("1e300 * 1e300", ["too large"]),
        ("5 / 0", ["division by zero"]),
        ("5 % 0", ["division by zero"]),
        ("(-8) ** 0.5", ["not a real number"]),
        ("2 +", ["not an arithmetic expression"]),
    ],
)
def test_the_calculator_refuses_anything_else_as_a_tool_error(
    builtins: Toolbox, expression: str, words: list[str]
) -> None:
    start = time.monotonic()
    result = calc(builtins, expression)
    assert time.monotonic() - start < 1  # 9 ** 9 ** 9 is refused, not computed
    assert result.error == "raised"
    assert result.content.startswith("error: calculator raised ValueError: ")
    assert all(w in result.content for w in words), result.content


def test_current_datetime_tells_the_time_in_a_zone(builtins: Toolbox) -> None:
    result = builtins.run("current_datetime", "{}")
    assert result.error is None and result.content.endswith(")")
    stamp, zone = result.content.split(" (")[0].rsplit(" ", 1)
    assert zone == "UTC"
    told = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - told).total_seconds()) < 60
    assert f"({told:%A})" in result.content

    unknown = builtins.run("current_datetime", {"timezone": "Mars/Olympus"})
    assert unknown.error == "raised" and '"Mars/Olympus"' in unknown.content


# --- running calls ------------------------------------------------------------------------


@pytest.fixture
def slow_and_faulty(tmp_path: Path) -> Toolbox:
    path = write(
        tmp_path,
        "faulty.py",
        '''
        import time

        def nap(seconds: float) -> str:
            """Sleep a while.

            Args:
                seconds: How long.
            """
            time.sleep(seconds)
            return "awake"

        def fail(reason: str) -> str:
            """Always fails.

            Args:
                reason: Why.
            """
            raise RuntimeError(reason + "\\nsecond line")

        def big(n: int) -> str:
            """A long text.

            Args:
                n: How many characters.
            """
            return "x" * n

        def facts(flag: bool, names: list[str] | None = None) -> dict:
            """Some structured data.

            Args:
                flag: A flag.
                names: Some names.
            """
            return {"flag": flag, "names": names, "when": None}

        async def later(text: str) -> list:
            """An async tool.

            Args:
                text: Anything.
            """
            return [text]

        class Opaque:
            def __str__(self) -> str:
                return "opaque!"

        def opaque():
            """Something that is not JSON."""
            return Opaque()
    ''',
    )
    return load_tools([str(path)])


def test_arguments_that_do_not_fit_say_what_is_wrong(slow_and_faulty: Toolbox) -> None:
    if not ARITHMETIC_TOOLS.is_file():
        pytest.skip(f"the shared arithmetic task is not here: {ARITHMETIC_TOOLS}")
    toolbox = load_tools([str(ARITHMETIC_TOOLS)])
    cases = {
        '{"expr": "1+1"}': ['calculate needs "expression" (a string)', 'takes no "expr"'],
        "2824 * 82": ["not JSON", "calculate(expression: string)", "got '2824 * 82'"],
        '["2 * 3"]': ["must be a JSON object", "calculate(expression: string)"],
        "{}": ['needs "expression" (a string)'],
        '{"expression": "1", "extra": 2}': ['takes no "extra"', "calculate(expression: string)"],
        '{"expression": 12}': ['needs "expression" to be a string, not 12'],
    }
    for arguments, words in cases.items():
        result = toolbox.run("calculate", arguments)
        assert result.error == "bad arguments", result
        assert result.content.startswith("error: calculate "), result.content
        assert all(w in result.content for w in words), result.content

    wrong = slow_and_faulty.run("facts", {"flag": "yes", "names": ["a", 2]})
    assert wrong.error == "bad arguments"
    assert 'needs "flag" to be true or false, not "yes"' in wrong.content
    assert '"names" to be an array of strings or null' in wrong.content
    # Integral floats pass where an integer is expected; JSON null where a value may be None.
    assert slow_and_faulty.run("big", {"n": 3.0}).content == "xxx"
    ok = slow_and_faulty.run("facts", '{"flag": true, "names": null}')
    assert json.loads(ok.content) == {"flag": True, "names": None, "when": None}


def test_unknown_raising_slow_and_long_calls_come_back_as_tool_results(
    slow_and_faulty: Toolbox,
) -> None:
    unknown = slow_and_faulty.run("calculate", '{"expression": "1"}')
    assert unknown.error == "unknown tool"
    assert '"calculate"' in unknown.content
    assert "the tools are: nap, fail, big, facts, later, opaque" in unknown.content

    raised = slow_and_faulty.run("fail", {"reason": "the disk is full"})
    assert raised.error == "raised"
    assert raised.content == "error: fail raised RuntimeError: the disk is full"

    start = time.monotonic()
    slow = slow_and_faulty.run("nap", {"seconds": 5}, timeout_s=0.5)
    assert time.monotonic() - start < 1.5
    assert (slow.error, slow.content) == ("timeout", "error: nap did not finish within 0.5 s")
    assert 450 < slow.ms < 1500

    long = slow_and_faulty.run("big", {"n": 10_000})
    assert long.error is None and len(long.content) <= 4000
    assert long.content.startswith("xxx") and long.content.endswith(
        "… (cut: 10000 characters in all)"
    )
    assert slow_and_faulty.run("opaque", {}).content == "opaque!"
    assert slow_and_faulty.run("later", {"text": "é"}).content == '["é"]'
