"""benchmarks/_timing.py: how a results section names the machine and commit it ran on,
and how a benchmark's new run replaces its own section of RESULTS.md."""

import re

from tests.benchmark_utils import benchmark_script

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw
processor\t: 1
model name\t: Other CPU
flags\t\t: fpu sse
"""

RESULTS = """# Benchmark results

Intro.

## Speed against timm and keras-hub

Date: 2026-11-24. Old speed table.

## Scaling with the number of patches

Scaling table.
"""


def test_cpu_model_and_flags_reads_the_first_cpu(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    with benchmark_script("_timing") as timing:
        model, flags = timing.cpu_model_and_flags(str(path))
        missing = timing.cpu_model_and_flags(str(tmp_path / "absent"))
    assert model == "AMD EPYC 9B45"
    assert {"avx2", "avx512f", "avx512bw"} <= flags and "Other" not in model
    assert missing == ("", set())


def test_this_machine_names_the_widest_vector_instructions(monkeypatch):
    with benchmark_script("_timing") as timing:
        for flags, suffix in (({"avx2", "avx512f"}, " (AVX-512)"), ({"avx2"}, " (AVX2)"), (set(), "")):
            monkeypatch.setattr(timing, "cpu_model_and_flags", lambda flags=flags: ("Some CPU", flags))
            described = timing.this_machine()
            assert described.endswith(", Some CPU" + suffix), described
            assert described.split(",")[1].strip().endswith("cores")


def test_this_commit_is_the_checkouts_or_unknown(tmp_path):
    with benchmark_script("_timing") as timing:
        commit = timing.this_commit()
        outside = timing.this_commit(str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{7,}( \+ local changes)?", commit), commit
    assert outside == "unknown"


def test_a_new_run_replaces_its_own_section_and_keeps_the_others(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    with benchmark_script("_timing") as timing:
        timing.write_section(str(results), "Speed against timm and keras-hub", "benchmarks/speed.py",
                             ["--backends", "jax"], "Medians of 5 runs.", ["| a |\n|---|", "| b |\n|---|"],
                             machine="x86_64, 2 cores, Some CPU (AVX2)", commit="abc1234")
        timing.write_section(str(results), "Serving: exports against the Keras model", "serving.py", [],
                             "Serving preamble.", ["| s |"], machine="m", commit="c")
    text = results.read_text()
    assert "Old speed table" not in text and text.count("## Speed against timm and keras-hub") == 1
    assert text.startswith("# Benchmark results\n\nIntro.\n\n## Speed against timm and keras-hub\n\nDate: ")
    assert ("Machine: x86_64, 2 cores, Some CPU (AVX2). Commit: abc1234. "
            "Command: `python benchmarks/speed.py --backends jax`.\n\nMedians of 5 runs.\n\n| a |\n|---|\n\n"
            "| b |\n|---|\n\n## Scaling with the number of patches\n\nScaling table.\n") in text
    # A benchmark without a section yet gets one at the end.
    assert "Scaling table.\n\n## Serving: exports against the Keras model\n\nDate: " in text
    assert text.endswith("Command: `python benchmarks/serving.py`.\n\nServing preamble.\n\n| s |\n")


def test_the_last_section_is_replaced_up_to_the_end(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    with benchmark_script("_timing") as timing:
        timing.write_section(str(results), "Scaling with the number of patches", "scaling.py", [], "New.",
                             ["| t |"], machine="m", commit="c")
    text = results.read_text()
    assert "Scaling table" not in text and "Old speed table" in text
    assert text.endswith("Command: `python benchmarks/scaling.py`.\n\nNew.\n\n| t |\n")
