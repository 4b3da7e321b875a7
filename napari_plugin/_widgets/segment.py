"""The Segment widget: ``run_case`` on an image layer in a worker thread, cancellable.

The run happens in napari's ``thread_worker`` (progress per stage in the activity dock; its cancel
button works, as does the widget's own Cancel), so the viewer stays responsive throughout. The
model is resolved by :func:`medseg.models.resolve_model`, which keeps it loaded: the second run
does not load it again. When the run finishes, the organ labels and the lesion instances are
added as layers (copies; the untouched result is kept on the layer so a later save can keep the
model's proposal under a person's correction). A cancelled or failed run adds nothing.
"""

from __future__ import annotations

import os
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import QTimer

from medseg.errors import CancelledError, MedsegError
from medseg.progress import CancelToken
from napari_plugin._layers import add_layers, layer_data_from_volume, layer_info, volume_from_layer
from napari_plugin._notify import OPTION_LABELS, notify_error, notify_info, notify_warning
from napari_plugin._widgets._viewer import unwrap
from napari_plugin._worker import TOTAL_STEPS, RunError, RunProgress, run_case_steps

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["SegmentWidget"]

_BUNDLE_WARNING = ("A MONAI bundle is code: trusting it lets its configs and scripts run with your rights. "
                   "Only for bundles from people you trust.")


class SegmentWidget(Container):
    """Dock widget: choose an image layer and a model, run, watch progress, cancel."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = unwrap(viewer)
        from medseg.pipeline import LesionOptions

        self._viewer = viewer
        defaults = LesionOptions()
        self.image = ComboBox(label="Image", choices=self._image_layers)
        self.model = ComboBox(label=OPTION_LABELS["model"], choices=["default", "model folder or bundle"],
                              value="default")
        self.model_folder = FileEdit(label="Model folder", mode="d", visible=False)
        self.trust_bundle = CheckBox(text=OPTION_LABELS["trust_bundle"], value=False, visible=False)
        self.bundle_warning = Label(value=_BUNDLE_WARNING, visible=False)
        self.device = ComboBox(label=OPTION_LABELS["device"], choices=["auto", "cpu", "cuda"], value="auto")
        # The inference back-end (docs/backends.md), shown when run_case takes one.
        self.backend = ComboBox(label=OPTION_LABELS["backend"], choices=list(_BACKENDS), value="auto",
                                visible=_run_case_takes("backend"),
                                tooltip="auto: the fastest installed on this machine (measured once per model); "
                                        "torch; openvino or onnxruntime (CPU, an exported copy of the model)")
        self.tta = CheckBox(text=OPTION_LABELS["tta"], value=False)
        self.lesions = CheckBox(text="Find lesions", value=True)
        self.min_volume = FloatSpinBox(label=OPTION_LABELS["min_volume_mm3"], value=defaults.min_volume_mm3,
                                       min=0.0, max=1e6, step=10.0)
        self.split = FloatSpinBox(label=OPTION_LABELS["split_h_mm"], value=0.0, min=0.0, max=50.0, step=0.5,
                                  tooltip="0: do not split touching lesions; 1-3 mm splits at narrow necks")
        self.threads = SpinBox(label="CPU threads", value=_default_threads(), min=1, max=os.cpu_count() or 1,
                               tooltip="threads for the network; one core is left to the viewer by default")
        self.output = FileEdit(label=OPTION_LABELS["output"], mode="d", value="",
                               tooltip="optional: write the model's proposal as a case folder now")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.image, self.model, self.model_folder, self.trust_bundle, self.bundle_warning,
                                  self.device, self.backend, self.tta, self.lesions, self.min_volume, self.split, self.threads,
                                  self.output,
                                  self.run_button, self.cancel_button, self.status], labels=True)
        self.bundle_warning.native.setWordWrap(True)
        self.bundle_warning.native.setStyleSheet("color: #e0a030")
        self.model.changed.connect(self._on_model_kind)
        self.trust_bundle.changed.connect(lambda on: setattr(self.bundle_warning, "visible", bool(on)))
        self.lesions.changed.connect(self._on_lesions)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(lambda *_: self.image.reset_choices())
        viewer.layers.events.removed.connect(lambda *_: self.image.reset_choices())
        self.worker: Any = None
        self._token: CancelToken | None = None
        #: The last progress yielded (stage and message), for the status line and tests.
        self.last_progress: RunProgress | None = None
        #: Layers added by the last finished run.
        self.added: list[Any] = []
        #: What runs: medseg.pipeline.run_case (replaceable, e.g. to count calls in tests).
        self.run_function: Any = None
        #: The longest step (seconds) of adding the last result's layers (napari's own layer set-up).
        self.add_layers_s = 0.0
        self._adding = False
        # napari builds a label layer's features table with pandas; importing it on the first result
        # would block the event loop for ~0.6 s, so it is imported now, with the widget.
        import pandas  # noqa: F401

        self.ready = False
        self._warm_up()

    def _warm_up(self) -> None:
        """Import PyTorch, MONAI and the CPU back-ends in a thread now, not when Run is pressed.

        Their C extensions initialise holding Python's GIL (here: 4-11 s in all, with single
        stretches of up to ~0.7 s), which no thread can avoid; done while the user sets up the
        run, those stretches do not fall into a segmentation. Then the objects of everything
        imported are frozen out of the cyclic GC (``gc.freeze``; ``MEDSEG_NAPARI_GC_FREEZE=0``
        turns it off), whose full collections otherwise freeze the viewer ~0.9 s each. A plain
        thread, shared by every widget of the process: it touches no Qt object, so a widget
        closed meanwhile is safe.
        """
        _start_warm_up()
        self.status.value = "loading PyTorch and MONAI…"
        self._ready_timer = QTimer(self.native)
        self._ready_timer.setInterval(100)
        self._ready_timer.timeout.connect(self._check_ready)
        self._ready_timer.start()
        self._check_ready()

    def _check_ready(self) -> None:
        if not _WARM.is_set():
            return
        self._ready_timer.stop()
        self.ready = True
        if self.status.value.startswith("loading"):
            self.status.value = "ready"

    # --- form ----------------------------------------------------------------------------------
    def _image_layers(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer_info(layer) is not None and layer_info(layer).role == "image"]

    def _on_model_kind(self, value: str) -> None:
        folder = value != "default"
        self.model_folder.visible = folder
        self.trust_bundle.visible = folder
        self.bundle_warning.visible = folder and self.trust_bundle.value

    def _on_lesions(self, on: bool) -> None:
        self.min_volume.enabled = bool(on)
        self.split.enabled = bool(on)

    def options(self) -> dict[str, Any]:
        """The ``run_case`` keyword arguments the form asks for."""
        from medseg.pipeline import LesionOptions

        model: Any = "default"
        if self.model.value != "default":
            folder = str(self.model_folder.value or "").strip()
            model = folder if folder not in ("", ".") else ""
        lesions: Any = False
        if self.lesions.value:
            lesions = LesionOptions(min_volume_mm3=float(self.min_volume.value),
                                    split_h_mm=float(self.split.value) or None)
        output = str(self.output.value or "").strip()
        options = {"model": model, "device": self.device.value, "tta": bool(self.tta.value), "lesions": lesions,
                   "trust_bundle": bool(self.trust_bundle.value) and model != "default",
                   "output": output if output not in ("", ".") else None, "command": "napari: medseg Segment"}
        if _run_case_takes("backend"):
            options["backend"] = self.backend.value
        return options

    # --- running -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """A run in the worker, or its layers still being added."""
        return self.worker is not None or self._adding

    def run(self, *_: Any) -> Any:
        """Start a run on the chosen image layer; returns the worker (None if nothing started)."""
        if self.running:
            notify_warning("A segmentation is already running: wait for it or cancel it")
            return None
        layer = self.image.value
        if layer is None:
            notify_error('"Image": no image layer; open a CT or MR first')
            return None
        options = self.options()
        if options["model"] == "":
            notify_error(f'"{OPTION_LABELS["model"]}": no folder chosen. Choose a medseg model folder or a MONAI '
                         "bundle folder, or use the default model")
            return None
        try:
            volume = volume_from_layer(layer)
        except MedsegError as error:
            notify_error(error)
            return None
        from napari.qt.threading import create_worker

        from medseg.pipeline import run_case

        self._token = token = CancelToken()
        holder: dict[str, Any] = {}
        run = partial(_run_with_threads, self.run_function or run_case, int(self.threads.value))
        worker = create_worker(run_case_steps, run, volume, cancel=token,
                               should_stop=lambda: bool(holder.get("worker") and holder["worker"].abort_requested),
                               _progress={"total": TOTAL_STEPS, "desc": f"medseg: segmenting {layer.name}"},
                               **options)
        holder["worker"] = worker
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_result(result, layer.name))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "starting…"
        self.added = []
        worker.start()
        return worker

    def cancel(self, *_: Any) -> None:
        """Stop the running segmentation (nothing is added)."""
        if self._token is not None:
            self._token.cancel()
        if self.worker is not None:
            self.worker.quit()
        self.status.value = "cancelling…"

    def _on_progress(self, progress: RunProgress) -> None:
        self.last_progress = progress
        self.status.value = f"{progress.stage} ({progress.step}/{TOTAL_STEPS})"
        pbar = getattr(self.worker, "pbar", None)
        if pbar is not None:
            pbar.set_description(f"medseg: {progress.stage}")

    def _on_result(self, result: Any, image_name: str) -> None:
        error = result.error if isinstance(result, RunError) else None
        if isinstance(error, CancelledError) or (self._token is not None and self._token.cancelled):
            return  # reported when the worker finishes
        if error is not None:
            self.status.value = "failed: see the notification"
            notify_error(error)
            return
        self._adding = True
        self.add_layers_s = 0.0
        self.added = []
        steps = result_layer_steps(self._viewer, result, image_name, self.added)
        self._next_step(steps, lambda: self._on_added(result, image_name))

    def _next_step(self, steps: list[Any], done: Any) -> None:
        """Run one step, then let the event loop draw and answer before the next."""
        if not steps:
            done()
            return
        started = time.perf_counter()
        steps[0]()
        self.add_layers_s = max(self.add_layers_s, time.perf_counter() - started)
        QTimer.singleShot(0, lambda: self._next_step(steps[1:], done))

    def _on_added(self, result: Any, image_name: str) -> None:
        self._adding = False
        n = 0 if result.lesion_table is None else len(result.lesion_table)
        where = f", case written to {result.path}" if result.path else ""
        self.status.value = f"done in {result.timings.get('total', 0):.1f} s: {n} lesions{where}"
        for warning in result.warnings:
            notify_warning(f"{image_name}: {warning}")
        notify_info(f"medseg: {image_name} segmented, {n} lesions{where}")

    def _on_error(self, error: BaseException) -> None:
        """A bug in the run (napari shows its traceback); user errors arrive as results."""
        self.status.value = f"failed: {type(error).__name__}"

    def _on_aborted(self) -> None:
        if self._token is not None:
            self._token.cancel()

    def _on_finished(self) -> None:
        cancelled = self._token is not None and self._token.cancelled and not self.added
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if cancelled:
            self.status.value = "cancelled: nothing added"
            notify_info("medseg: segmentation cancelled; nothing was added")


#: ``backend=`` values of :func:`medseg.pipeline.run_case` (``medseg.inference.backends.BACKENDS``, kept here
#: so that opening the widget does not import the back-ends).
_BACKENDS = ("auto", "torch", "openvino", "onnxruntime")


def _run_case_takes(name: str) -> bool:
    import inspect

    from medseg.pipeline import run_case

    return name in inspect.signature(run_case).parameters


def _default_threads() -> int:
    """All cores but one: the viewer keeps a core to draw and answer while the network runs."""
    return max(1, (os.cpu_count() or 1) - 1)


def _run_with_threads(run: Any, threads: int, source: Any, **options: Any) -> Any:
    import torch

    torch.set_num_threads(threads)  # process-wide; set for every run, as the form says
    return run(source, **options)


_WARM = threading.Event()
_WARM_LOCK = threading.Lock()
_WARM_THREAD: list[threading.Thread] = []


def _start_warm_up() -> None:
    with _WARM_LOCK:
        if not _WARM_THREAD:
            _WARM_THREAD.append(threading.Thread(target=_import_inference, name="medseg warm-up", daemon=True))
            _WARM_THREAD[0].start()


def _import_inference() -> None:
    try:
        _import_inference_modules()
        if os.environ.get("MEDSEG_NAPARI_GC_FREEZE", "1") != "0":
            # napari, PyTorch and MONAI leave ~650 000 long-lived objects; every full collection of
            # Python's cyclic GC walks them all, holding the GIL ~0.9 s here: the viewer freezes,
            # whichever thread collects. Freezing them (they live as long as the process anyway)
            # makes a full collection cost ~0 ms; garbage made later is collected as usual.
            import gc

            gc.freeze()
    finally:
        _WARM.set()


def _import_inference_modules() -> None:
    import importlib

    import monai.networks.nets  # noqa: F401
    import torch  # noqa: F401

    import medseg.inference
    import medseg.pipeline  # noqa: F401

    # The CPU back-ends medseg's "auto" may choose, when installed (each import holds the GIL for
    # up to ~0.6 s here: better now than in the middle of a run).
    for name in ("onnx", "onnxruntime", "openvino"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def result_layer_steps(viewer: Any, result: Any, image_name: str, added: list[Any]) -> list[Any]:
    """Adding a ``CaseResult``'s layers as separate steps (each ~0.2-0.4 s of napari's own layer
    set-up here), so the widget can give the event loop a turn between them.

    Organ labels and lesion instances become layers holding copies of the result's arrays (the
    result itself stays untouched: the proposal a first save keeps). ``added`` collects the layers.
    """
    provenance = dict(result.provenance)
    case_path = str(result.path or "")
    proposal = None if result.path else result
    labels = result.labels.with_array(result.labels.array.copy(), label_set=result.labels.label_set)
    data = [layer_data_from_volume(labels, f"{image_name} organs", kind="labels", provenance=provenance,
                                   case_path=case_path)]
    if result.lesions is not None:
        lesions = result.lesions.labels
        data.append(layer_data_from_volume(lesions.with_array(lesions.array.copy()), f"{image_name} lesions",
                                           kind="lesions", provenance=provenance, case_path=case_path))
    for item in data:
        item[1]["metadata"]["medseg"].proposal = proposal
    if result.lesion_table is not None:
        data[-1][1]["metadata"]["medseg"].lesion_rows = list(result.lesion_table.rows)
    steps = [partial(lambda item: added.extend(add_layers(viewer, [item])), item) for item in data]
    if result.lesions is not None:
        steps.append(partial(_dock_lesion_table, viewer))
    return steps


def _dock_lesion_table(viewer: Any) -> None:
    from napari_plugin._widgets.lesion_table import LesionTableWidget

    if getattr(viewer, "window", None) is not None and not any(
            isinstance(w, LesionTableWidget) for w in _docked(viewer)):
        viewer.window.add_dock_widget(LesionTableWidget(viewer), name="Lesion table", area="right")


def add_result_layers(viewer: Any, result: Any, image_name: str) -> list[Any]:
    """All of :func:`result_layer_steps` at once; returns the layers added."""
    added: list[Any] = []
    for step in result_layer_steps(viewer, result, image_name, added):
        step()
    return added


def _docked(viewer: Any) -> list[Any]:
    window = getattr(viewer, "window", None)
    docks = getattr(window, "dock_widgets", None) if window is not None else None
    return list(docks.values()) if docks else []

