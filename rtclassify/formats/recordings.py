"""One reader interface for every recording format: `read_recording(path)` -> [Sweep].

Each Sweep is one recorded channel of one sweep (rtclassify.formats.nwb.Sweep): response (mV in
current clamp), command (pA) when known, rate (Hz), clamp mode, channel, units, and `refusal`
when the channel can get no label. NWB files (Allen, MIES, NWB 2) through nwb/, Axon ABF 1 and 2
through pyabf (abf.py), HEKA PatchMaster bundles through pyheka (heka.py, an optional extra), a
folder of Igor waves (igor_waves.py), the other formats neo reads through neo (neo_files.py).
"""
from pathlib import Path

from rtclassify.formats import RecordingError
from rtclassify.formats.neo_files import NEO_IOS

RECORDING_SUFFIXES = (".nwb", ".abf", ".dat", *NEO_IOS)


def read_recording(path) -> list:
    """Every sweep x channel of the recording at `path`, in file order; RecordingError naming the
    file and the reason when it cannot be read (missing, truncated, of an unknown format)."""
    path = Path(path)
    if path.is_dir():
        from rtclassify.formats.igor_waves import is_wave_folder, read_wave_folder

        if is_wave_folder(path):
            return read_wave_folder(path)
        raise RecordingError(f"{path}: a folder, and not one of Igor waves (.ibw); give a recording file")
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".dat":
        from rtclassify.formats.heka import read_heka

        return read_heka(path)
    from rtclassify.formats.abf import is_abf

    if is_abf(path):
        from rtclassify.formats.abf import read_abf

        return read_abf(path)
    if suffix in NEO_IOS:
        from rtclassify.formats.neo_files import read_with_neo

        return read_with_neo(path)
    if suffix == ".nwb" or is_hdf5(path):
        from rtclassify.formats.nwb import read_sweeps

        return read_sweeps(path)
    raise RecordingError(f"{path}: unknown recording format {suffix!r}; readable: "
                         + ", ".join(RECORDING_SUFFIXES))


def is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False
