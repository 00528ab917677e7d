from bench.voice_latency import word_error_rate


def test_word_error_rate() -> None:
    assert word_error_rate("show me black hoodies", "Show me black hoodies.") == 0.0
    assert word_error_rate("show me black hoodies", "show me black hoodie") == 0.25
    assert word_error_rate("a b", "x a b") == 0.5
    assert word_error_rate("a b c d", "") == 1.0


def test_the_bench_commands_are_a_plugin_of_the_cli() -> None:
    """`shoptalk bench ...` comes from bench.cli through the ``shoptalk.cli`` entry point; server.cli names no bench."""
    from pathlib import Path

    from typer.testing import CliRunner

    from server.cli import app

    listed = CliRunner().invoke(app, ["bench", "--help"]).output
    assert all(name in listed for name in ("first-run", "dialogue", "load", "report")), listed
    assert not [line for path in Path("server/cli").glob("*.py") for line in path.read_text().splitlines()
                if "import" in line and "bench" in line], "server.cli imports the benchmarks"
