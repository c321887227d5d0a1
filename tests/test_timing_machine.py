"""benchmarks/_timing.py: how a results section names the machine it ran on."""

from tests.benchmark_utils import benchmark_script

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw
processor\t: 1
model name\t: Other CPU
flags\t\t: fpu sse
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
