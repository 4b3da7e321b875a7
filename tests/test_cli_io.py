"""``medseg info`` and ``medseg convert`` on image files; error lines; start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main


def _nifti(path, array=None):
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5) if array is None else array
    nib.save(nib.Nifti1Image(array, np.diag([-1.5, -1.5, 3.0, 1.0])), str(path))
    return path


def test_info_json(tmp_path, capsys):
    path = _nifti(tmp_path / "a.nii.gz")
    assert main(["info", str(path), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["shape"] == [3, 4, 5]
    assert entry["spacing_mm"] == [1.5, 1.5, 3.0]
    assert entry["orientation"] == "LPS"


def test_info_table(tmp_path, capsys):
    path = _nifti(tmp_path / "a.nii.gz")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3x4x5 @ 1.5x1.5x3 mm LPS" in out


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii"])
def test_convert_keeps_values_and_geometry(tmp_path, capsys, suffix):
    src = _nifti(tmp_path / "a.nii.gz")
    out = tmp_path / f"b{suffix}"
    assert main(["convert", str(src), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    from medseg.io import load_volume

    a, b = load_volume(src), load_volume(out)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.affine, b.affine)


def test_error_is_one_line_without_traceback(tmp_path, capsys):
    src = _nifti(tmp_path / "a.nii.gz")
    before = src.read_bytes()
    assert main(["convert", str(src), str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"medseg convert: error: {src}: is the input file")
    assert src.read_bytes() == before


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "info", str(tmp_path / "missing.nii")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "does not exist" in err


def test_missing_input(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_series_on_a_single_file_is_refused(tmp_path, capsys):
    src = _nifti(tmp_path / "a.nii.gz")
    assert main(["convert", str(src), str(tmp_path / "b.nii.gz"), "--series", "3"]) == 2
    assert "--series 3 does not apply" in capsys.readouterr().err


def test_help_and_info_do_not_import_torch_or_monai(tmp_path):
    """`medseg --help` and `medseg info` must start fast: torch (~1.3 s) and MONAI (~3.7 s) stay out."""
    path = _nifti(tmp_path / "a.nii.gz")
    code = (
        "import sys\n"
        "from medseg.cli.main import build_parser, main\n"
        "build_parser()\n"
        f"main(['info', {str(path)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'napari', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "medseg.cli.main", "info", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("does not exist. Check the path")


def test_closed_pipe_is_not_an_error(tmp_path):
    path = _nifti(tmp_path / "a.nii.gz")
    script = f"import sys; from medseg.cli.main import main; sys.exit(main(['info', {str(path)!r}, '--json']))"
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -c 1", shell=True,
                          capture_output=True, text=True)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
