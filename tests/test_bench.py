from bench.voice_latency import word_error_rate


def test_word_error_rate() -> None:
    assert word_error_rate("show me black hoodies", "Show me black hoodies.") == 0.0
    assert word_error_rate("show me black hoodies", "show me black hoodie") == 0.25
    assert word_error_rate("a b", "x a b") == 0.5
    assert word_error_rate("a b c d", "") == 1.0
