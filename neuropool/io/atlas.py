"""Allen CCF annotation volumes: read one by URL, look up the brain region of points near bregma.

An annotation volume is the Allen Institute's ``annotation_25.nrrd`` (or ``_10``, ``_50``): one
Allen structure id (uint32) per voxel, axes AP, DV, ML as stored (the NRRD's first axis
fastest), voxel size from the header's ``space directions``. It is read through fsspec from any
URL (local path, ``file://``, ``s3://``, ``https://``...) once per process and URL, so a worker
that localises several probes reads it once.

Coordinates follow IBL (``iblatlas.atlas.AllenAtlas``, without its optional scaling): points are
``xyz`` in µm relative to bregma, x = ML (right positive), y = AP (anterior positive), z = DV
(dorsal positive). The volume's voxel ``(i_ap, i_dv, i_ml)`` has CCF coordinates
``i * voxel_um`` µm (AP from the front, DV from the top, ML from the left, so the right
hemisphere has the larger ML indices) and bregma is at CCF ``(ML, AP, DV) = (5739, 5400, 332)``
µm, IBL's :data:`IBL_BREGMA_UM` (``ALLEN_CCF_LANDMARKS_MLAPDV_UM['bregma']``)::

    ccf_ml = bregma_ml + x      ccf_ap = bregma_ap - y      ccf_dv = bregma_dv - z

and the voxel holding a point is the nearest one (``round(ccf / voxel_um)``). Points outside the
volume are in no region: id 0, ``void``. Ids become acronyms and names through the Allen
structure ontology that ``iblatlas.regions.BrainRegions`` ships (offline).
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from neuropool.errors import AtlasError, SourceNotFoundError, StoreError
from neuropool.io import urls

#: Bregma in the Allen CCF volume, µm (ML, AP, DV), as IBL places it.
IBL_BREGMA_UM: tuple[float, float, float] = (5739.0, 5400.0, 332.0)
#: Acronym given to ids that the Allen structure ontology does not know.
UNKNOWN_ACRONYM = "unknown"
#: How many volumes a process keeps (a 25 µm annotation volume is 300 MB).
CACHE_SIZE = 2

_cache: OrderedDict[tuple[str, str], AnnotationVolume] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class AnnotationVolume:
    """An annotation volume in memory.

    Attributes
    ----------
    url : str
        Where it was read from.
    ids : numpy.ndarray
        Allen structure ids, shape ``(n_ap, n_dv, n_ml)``, the NRRD's integer type.
    voxel_um : tuple of float
        Voxel size along AP, DV, ML, µm.
    """

    url: str
    ids: np.ndarray
    voxel_um: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_ap, n_dv, n_ml)``."""
        return tuple(int(n) for n in self.ids.shape)  # type: ignore[return-value]

    def voxel_indices(self, xyz_um: np.ndarray,
                      bregma_um: tuple[float, float, float] = IBL_BREGMA_UM) -> tuple[np.ndarray, np.ndarray]:
        """The nearest voxel ``(i_ap, i_dv, i_ml)`` of each point, and whether it is inside.

        Parameters
        ----------
        xyz_um : array_like
            (n, 3) points (ML, AP, DV), µm from bregma (IBL's x, y, z).
        bregma_um : tuple of float
            Bregma in the volume's CCF coordinates, µm (ML, AP, DV).

        Returns
        -------
        indices : numpy.ndarray
            (n, 3) int64 indices, meaningful where ``inside``.
        inside : numpy.ndarray
            (n,) bool: the point is finite and its voxel is in the volume.
        """
        xyz = np.atleast_2d(np.asarray(xyz_um, dtype=float))
        if xyz.shape[-1] != 3:
            raise ValueError(f"expected points as (n, 3) ML, AP, DV µm, got shape {xyz.shape}")
        ccf = xyz_to_ccf(xyz, bregma_um)  # ML, AP, DV
        ccf_ap_dv_ml = ccf[:, [1, 2, 0]]
        finite = np.all(np.isfinite(ccf_ap_dv_ml), axis=1)
        frac = np.where(finite[:, None], ccf_ap_dv_ml / np.asarray(self.voxel_um), 0.0)
        idx = np.round(frac).astype(np.int64)
        inside = finite & np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=1)
        return idx, inside

    def region_ids(self, xyz_um: np.ndarray,
                   bregma_um: tuple[float, float, float] = IBL_BREGMA_UM) -> np.ndarray:
        """Allen structure id at each point (0, ``void``, outside the volume or for NaN).

        Parameters
        ----------
        xyz_um : array_like
            (n, 3) points (ML, AP, DV), µm from bregma.
        bregma_um : tuple of float
            Bregma in the volume's CCF coordinates, µm (ML, AP, DV).

        Returns
        -------
        numpy.ndarray
            (n,) int64 ids.
        """
        idx, inside = self.voxel_indices(xyz_um, bregma_um)
        out = np.zeros(len(idx), dtype=np.int64)
        i = idx[inside]
        out[inside] = self.ids[i[:, 0], i[:, 1], i[:, 2]]
        return out

    def surface_z(self, x_um: float, y_um: float,
                  bregma_um: tuple[float, float, float] = IBL_BREGMA_UM) -> float | None:
        """The brain surface's z (µm from bregma) above the point (x, y), as IBL finds it.

        Going down the volume's DV column at (x, y), the surface is the centre of the first
        non-void voxel that follows a void one (``BrainAtlas.compute_surface``'s ``top``).

        Returns
        -------
        float or None
            None where (x, y) is outside the volume, the column holds no brain, or the brain
            touches the top of the volume (IBL leaves the given z there too).
        """
        idx, inside = self.voxel_indices(np.array([[x_um, y_um, 0.0]]), bregma_um)
        i_ap, _, i_ml = idx[0]
        if not (np.isfinite(x_um) and np.isfinite(y_um)
                and 0 <= i_ap < self.shape[0] and 0 <= i_ml < self.shape[2]):
            return None
        void = self.ids[i_ap, :, i_ml] == 0
        entering = np.flatnonzero(void[:-1] & ~void[1:])  # void voxel k, brain at k + 1
        if entering.size == 0 or entering[0] == 0:
            return None
        ccf_dv = (entering[0] + 1) * self.voxel_um[1]
        return float(bregma_um[2] - ccf_dv)


def xyz_to_ccf(xyz_um: np.ndarray, bregma_um: tuple[float, float, float] = IBL_BREGMA_UM) -> np.ndarray:
    """IBL's xyz (µm from bregma) -> CCF coordinates (ML, AP, DV) in µm from the volume's corner.

    The same as ``AllenAtlas.xyz2ccf`` (in metres there) without scaling.
    """
    xyz = np.asarray(xyz_um, dtype=float)
    b = np.asarray(bregma_um, dtype=float)
    return np.stack([b[0] + xyz[..., 0], b[1] - xyz[..., 1], b[2] - xyz[..., 2]], axis=-1)


def ccf_to_xyz(ccf_um: np.ndarray, bregma_um: tuple[float, float, float] = IBL_BREGMA_UM) -> np.ndarray:
    """CCF (ML, AP, DV) µm -> IBL's xyz µm from bregma; the inverse of :func:`xyz_to_ccf`."""
    ccf = np.asarray(ccf_um, dtype=float)
    b = np.asarray(bregma_um, dtype=float)
    return np.stack([ccf[..., 0] - b[0], b[1] - ccf[..., 1], b[2] - ccf[..., 2]], axis=-1)


# -- reading ------------------------------------------------------------------------------------


def read_annotation(url: str, storage_options: dict[str, Any] | None = None) -> AnnotationVolume:
    """The annotation volume at ``url``, read once per process (the last few are kept).

    Parameters
    ----------
    url : str
        An Allen CCF annotation NRRD (``annotation_25.nrrd``), any fsspec URL; gzip, bzip2 or
        raw encoding, header attached.
    storage_options : dict, optional
        fsspec options for ``url``.

    Raises
    ------
    SourceNotFoundError
        The URL does not exist or cannot be reached.
    AtlasError
        The file is not an NRRD, not 3-D, or does not hold integer ids.
    """
    key = (url, json.dumps(storage_options or {}, sort_keys=True, default=str))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        volume = _read(url, storage_options)
        _cache[key] = volume
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return volume


def clear_cache() -> None:
    """Forget the volumes read so far (the next :func:`read_annotation` reads again)."""
    with _cache_lock:
        _cache.clear()


def _read(url: str, storage_options: dict[str, Any] | None) -> AnnotationVolume:
    import nrrd

    fs, path = urls.get_fs(url, storage_options)
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as e:
        why = f": {type(e.__cause__).__name__}: {e.__cause__}" if e.__cause__ else ""
        raise SourceNotFoundError(
            f"{url}: atlas annotation volume not found or not reachable{why} (expected an Allen "
            f"CCF annotation NRRD such as annotation_25.nrrd; check localize.atlas.url)") from e
    except (OSError, StoreError) as e:  # connection refused, permission denied...
        raise SourceNotFoundError(f"{url}: cannot read the atlas annotation volume: {e}") from e
    if not raw.startswith(b"NRRD"):
        raise AtlasError(f"{url}: not an NRRD file (it starts with {raw[:16]!r}, an NRRD starts "
                         f"with 'NRRD000x'); give the Allen CCF annotation volume, e.g. annotation_25.nrrd")
    buf = io.BytesIO(raw)
    del raw
    try:
        header = nrrd.read_header(buf)
    except nrrd.NRRDError as e:
        raise AtlasError(f"{url}: unreadable NRRD header: {e}") from e
    _check_header(url, header)
    try:
        ids = nrrd.read_data(header, buf, index_order="F")  # (AP, DV, ML) for Allen's volumes
    except (nrrd.NRRDError, ValueError, OSError, EOFError) as e:
        raise AtlasError(f"{url}: cannot read the NRRD's data ({header.get('encoding')} "
                         f"encoding): {e}") from e
    expected = tuple(int(n) for n in header["sizes"])
    if ids.shape != expected:
        raise AtlasError(f"{url}: the header says sizes {expected} but the data hold "
                         f"{ids.size} values: the file is truncated or corrupt")
    return AnnotationVolume(url=url, ids=ids, voxel_um=_voxel_size(url, header))


def _check_header(url: str, header: dict[str, Any]) -> None:
    """Dimensionality, type and layout of an annotation volume, before reading its data."""
    dim = int(header.get("dimension", len(header.get("sizes", ()))))
    if dim != 3:
        raise AtlasError(f"{url}: expected a 3-D annotation volume (AP, DV, ML), found "
                         f"{dim} dimensions (sizes {list(header.get('sizes', []))})")
    kind = str(header.get("type", ""))
    if not _is_integer_type(kind):
        raise AtlasError(f"{url}: expected integer Allen structure ids (the annotation volume, "
                         f"uint32), found type {kind!r}: is this the template (average_template) "
                         f"instead of the annotation?")
    if header.get("data file", header.get("datafile")) is not None:
        raise AtlasError(f"{url}: the NRRD header points to a detached data file "
                         f"({header.get('data file', header.get('datafile'))!r}); give a single "
                         f"file with the data attached (.nrrd, not .nhdr)")


def _is_integer_type(kind: str) -> bool:
    """True for NRRD's integer type names (``uint32``, ``unsigned int``, ``short``...)."""
    return kind.strip().lower() not in ("", "float", "double", "block")


def _voxel_size(url: str, header: dict[str, Any]) -> tuple[float, float, float]:
    """Voxel size per axis (µm) from ``space directions`` (axis-aligned), else ``spacings``."""
    directions = header.get("space directions")
    if directions is not None:
        m = np.asarray(directions, dtype=float)
        if m.shape == (3, 3) and np.all(np.isfinite(m)):
            if np.any(np.abs(m - np.diag(np.diag(m))) > 1e-9 * np.abs(m).max()):
                raise AtlasError(f"{url}: expected axis-aligned voxels (a diagonal 'space "
                                 f"directions', axes AP, DV, ML as the Allen volumes store them), "
                                 f"found {m.tolist()}")
            size = np.abs(np.diag(m))
            if np.all(size > 0):
                return tuple(float(s) for s in size)  # type: ignore[return-value]
    spacings = header.get("spacings")
    if spacings is not None:
        size = np.abs(np.asarray(spacings, dtype=float))
        if size.shape == (3,) and np.all(np.isfinite(size)) and np.all(size > 0):
            return tuple(float(s) for s in size)  # type: ignore[return-value]
    raise AtlasError(f"{url}: no voxel size in the NRRD header (expected 'space directions' such "
                     f"as (25,0,0) (0,25,0) (0,0,25), or 'spacings'), found "
                     f"{ {k: header.get(k) for k in ('space directions', 'spacings')} }")


# -- the Allen structure ontology ----------------------------------------------------------------


@lru_cache(maxsize=1)
def _ontology() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted positive ids, their acronyms, their names), from iblatlas' BrainRegions."""
    from iblatlas.regions import BrainRegions

    br = BrainRegions()
    keep = br.id >= 0
    ids, order = np.unique(br.id[keep], return_index=True)
    return ids, np.asarray(br.acronym[keep])[order], np.asarray(br.name[keep])[order]


def _ontology_index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known_ids, _, _ = _ontology()
    ids = np.abs(np.asarray(ids, dtype=np.int64))  # IBL's left-hemisphere ids are negative
    pos = np.clip(np.searchsorted(known_ids, ids), 0, len(known_ids) - 1)
    return pos, known_ids[pos] == ids


def acronyms(ids: np.ndarray) -> np.ndarray:
    """Allen acronym of each structure id (``void`` for 0; :data:`UNKNOWN_ACRONYM` if unknown)."""
    pos, known = _ontology_index(ids)
    return np.where(known, _ontology()[1][pos], UNKNOWN_ACRONYM).astype(object)


def names(ids: np.ndarray) -> np.ndarray:
    """Allen full name of each structure id (:data:`UNKNOWN_ACRONYM` if unknown)."""
    pos, known = _ontology_index(ids)
    return np.where(known, _ontology()[2][pos], UNKNOWN_ACRONYM).astype(object)


def unknown_ids(ids: np.ndarray) -> list[int]:
    """The distinct ids among ``ids`` that the Allen structure ontology does not know."""
    pos, known = _ontology_index(ids)
    return sorted({int(i) for i in np.asarray(ids)[~known]})


def region_counts(ids: np.ndarray) -> dict[str, int]:
    """How many of ``ids`` fall in each region, by acronym, most frequent first."""
    values, counts = np.unique(acronyms(ids).astype(str), return_counts=True)
    order = np.lexsort((values, -counts))
    return {str(values[i]): int(counts[i]) for i in order}
