"""The web UI's page (Gradio): four tabs, data -> train -> generate -> compare.

Layout and wiring only: each button calls one function of :mod:`dreamrelation.ui.actions`, and a user
error (a :class:`~dreamrelation.errors.DreamRelationError`: it names the file or setting and the fix)
is shown in the tab's message line while the server keeps serving. The Train tab polls the
background job once a second, so a run goes on whether or not a page watches it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamrelation.errors import DreamRelationError
from dreamrelation.ui import actions
from dreamrelation.ui.jobs import JobBoard
from dreamrelation.ui.view import CSS, error_text, escape, loss_image, message_html, progress_html

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
DTYPES = ["float32", "bfloat16", "float16"]


def build_app(ws: actions.Workspace, board: JobBoard | None = None) -> Any:
    """The Gradio Blocks of the whole UI over the workspace ``ws``."""
    import gradio as gr

    from dreamrelation.prepare.captions import DEFAULT_CAPTION_MODEL
    from dreamrelation.prepare.config import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
    from dreamrelation.training.methods.settings import METHOD_NAMES

    board = board or JobBoard()
    toy = actions.toy_preset()
    defaults = actions.default_settings(actions.TOY_BACKBONE)
    names, toy_inputs = actions.backbone_names(), actions.image_inputs(actions.TOY_BACKBONE)
    keep = gr.update()

    def image_updates(bb: str) -> tuple:
        """The first-frame box, an image field and the note line for backbone ``bb``."""
        inputs = actions.image_inputs(bb)
        return gr.update(**inputs.first_frame_box()), gr.update(**inputs.image_field()), inputs.note

    def guarded(fn: Callable[..., tuple], n_outputs: int) -> Callable[..., tuple]:
        """Run a handler; on an error, leave its outputs as they are and show the message (last output)."""

        def run(*args: Any) -> tuple:
            try:
                return fn(*args)
            except Exception as error:  # noqa: BLE001 - every failure becomes the tab's message
                return (*([keep] * (n_outputs - 1)), message_html(error_text(error)))

        return run

    with gr.Blocks(title="dreamrelation", analytics_enabled=False) as app:
        gr.Markdown(
            "# dreamrelation\nTeach a video model a relation from a few clips: "
            "**1 Data → 2 Train → 3 Generate → "
            f"4 Compare**. Folders this page may read: `{ws.describe()}`."
        )
        data_state = gr.State("")
        with gr.Tabs():
            # ---------------------------------------------------------------- 1. data
            with gr.Tab("1 · Data", id="data"):
                with gr.Row():
                    folder = gr.Textbox(
                        label="Dataset folder",
                        placeholder="data/shaking_hands",
                        elem_id="data-folder",
                        scale=4,
                    )
                    open_button = gr.Button("Open folder", elem_id="data-open", scale=1)
                    toy_button = gr.Button(
                        "Toy world: walking towards", variant="primary", elem_id="data-toy", scale=2
                    )
                data_message = gr.HTML(elem_id="data-message", elem_classes="dr-message")
                clips = gr.Gallery(
                    label="Clips (playable) with their captions", columns=6, height=360, elem_id="data-clips"
                )
                captions = gr.Dataframe(
                    headers=["clip", "caption", "status"],
                    datatype=["str", "str", "str"],
                    interactive=True,
                    static_columns=[0, 2],
                    label="Captions (edit, then save)",
                    elem_id="data-captions",
                )
                with gr.Row():
                    caption_model = gr.Textbox(
                        DEFAULT_CAPTION_MODEL,
                        label="Caption model (the judge's VLM family: hub id or folder)",
                        scale=3,
                    )
                    propose_button = gr.Button(
                        "Propose captions for clips without one", elem_id="data-propose"
                    )
                    save_button = gr.Button("Save captions", elem_id="data-save")
                with gr.Accordion("Automatic masks (Grounding DINO + SAM)", open=False):
                    with gr.Row():
                        detector = gr.Textbox(DEFAULT_DETECTOR, label="Detector")
                        segmenter = gr.Textbox(DEFAULT_SEGMENTER, label="Segmenter")
                        masks_button = gr.Button("Run automatic masks", elem_id="data-masks-run")
                masks = gr.Gallery(
                    label="Mask previews: each clip, then its masks over it (subject 1 red, subject 2 green)",
                    columns=4,
                    height=260,
                    object_fit="contain",
                    elem_id="data-masks",
                )
                failed = gr.HTML(elem_id="data-failed", elem_classes="dr-message")

                def show(view: actions.DataView, note: str) -> tuple:
                    gallery = [
                        (str(c.preview), f"{c.name}: {c.caption or '(no caption)'}")
                        for c in view.clips
                        if c.preview
                    ]
                    mask_items = [(str(c.mask_preview), c.name) for c in view.clips if c.mask_preview]
                    table = [[c.name, c.caption, c.status] for c in view.clips]
                    problems = "".join(f'<p class="dr-error">{escape(p)}</p>' for p in view.failed)
                    head = f"{len(view.clips)} clips in {view.folder} (relation: {view.relation}); "
                    head += f"{sum(c.mask_preview is not None for c in view.clips)} with masks. {note}"
                    return (
                        str(view.folder),
                        str(view.folder),
                        gallery,
                        table,
                        mask_items,
                        problems,
                        message_html(head),
                    )

                data_outputs = [folder, data_state, clips, captions, masks, failed, data_message]

                def do_open(text: str) -> tuple:
                    return show(actions.open_data(ws, text), "")

                def do_toy() -> tuple:
                    path = actions.toy_data(ws)
                    return show(actions.open_data(ws, path), "The toy world's exemplars, with masks.")

                def do_save(text: str, table: Any) -> tuple:
                    rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
                    written = actions.save_captions(ws, text, {str(r[0]): str(r[1] or "") for r in rows})
                    return show(actions.open_data(ws, text), f"Saved {len(written)} caption(s).")

                def do_propose(text: str, model: str) -> tuple:
                    proposals = actions.propose(ws, text, model)
                    view = actions.open_data(ws, text)
                    by_name = {p.name: p for p in proposals}
                    for clip in view.clips:
                        proposal = by_name.get(clip.name)
                        if proposal is not None and proposal.status == "proposed":
                            clip.caption, clip.status = (
                                proposal.caption,
                                "proposed: confirm or edit, then save",
                            )
                        elif proposal is not None and proposal.status == "failed":
                            clip.status, clip.problem = "failed", proposal.message
                    done = sum(p.status == "proposed" for p in proposals)
                    return show(
                        view, f"{done} caption(s) proposed by {model}: check them, then Save captions."
                    )

                def do_masks(text: str, det: str, seg: str) -> tuple:
                    summary = actions.run_masks(ws, text, det, seg)
                    view = actions.open_data(ws, text)
                    for report in summary.reports:
                        if report.status == "failed":
                            for clip in view.clips:
                                if clip.name == report.name:
                                    clip.status, clip.problem = "masks failed", report.message
                    return show(
                        view, f"Masks: {summary.count('done')} done, {summary.count('failed')} failed."
                    )

                n = len(data_outputs)
                open_button.click(guarded(do_open, n), [folder], data_outputs)
                folder.submit(guarded(do_open, n), [folder], data_outputs)
                toy_button.click(guarded(do_toy, n), [], data_outputs)
                save_button.click(guarded(do_save, n), [folder, captions], data_outputs)
                propose_button.click(guarded(do_propose, n), [folder, caption_model], data_outputs)
                masks_button.click(guarded(do_masks, n), [folder, detector, segmenter], data_outputs)

            # ---------------------------------------------------------------- 2. train
            with gr.Tab("2 · Train", id="train"):
                with gr.Row():
                    train_data = gr.Textbox(
                        label="Dataset folder (from the Data page)", elem_id="train-data", scale=3
                    )
                    output = gr.Textbox(
                        "runs/ui-walking_towards",
                        label="Run folder (checkpoints, LoRA files)",
                        elem_id="train-output",
                        scale=3,
                    )
                with gr.Row():
                    backbone = gr.Dropdown(
                        names, value=actions.TOY_BACKBONE, label="Backbone", elem_id="train-backbone"
                    )
                    model = gr.Textbox(
                        actions.TOY_MODEL,
                        label="Model: hub id or folder ('shipped': the toy world's weights)",
                        elem_id="train-model",
                    )
                    dtype = gr.Dropdown(DTYPES, value="float32", label="Weights dtype")
                    method = gr.Dropdown(
                        list(METHOD_NAMES),
                        value="dreamrelation",
                        label="Method (docs/baselines.md)",
                        elem_id="train-method",
                    )
                with gr.Row():
                    video = toy["video"]
                    num_frames = gr.Number(
                        video["num_frames"],
                        label="video.num_frames",
                        precision=0,
                        info=actions.cache_meaning("num_frames"),
                    )
                    height = gr.Number(
                        video["height"],
                        label="video.height",
                        precision=0,
                        info=actions.cache_meaning("height"),
                    )
                    width = gr.Number(
                        video["width"], label="video.width", precision=0, info=actions.cache_meaning("width")
                    )
                    recipe = gr.Dropdown(
                        list(actions.MEMORY_RECIPES),
                        value=next(iter(actions.MEMORY_RECIPES)),
                        label="Memory recipe (docs/memory.md)",
                    )
                setting_boxes = []
                keys = list(actions.MAIN_TRAIN_KEYS)
                for start in range(0, len(keys), 4):
                    with gr.Row():
                        for key in keys[start : start + 4]:
                            integer = isinstance(defaults[key], int) and not isinstance(defaults[key], bool)
                            setting_boxes.append(
                                gr.Number(
                                    defaults[key],
                                    label=key,
                                    info=actions.setting_meaning(key),
                                    precision=0 if integer or key == "validation_every" else None,
                                    elem_id=f"train-{key.replace('.', '-').replace('_', '-')}",
                                )
                            )
                with gr.Row():
                    validation_prompt = gr.Textbox(
                        toy["prompt"],
                        label="Validation prompt (rendered every validation_every steps)",
                        scale=3,
                    )
                    extra = gr.Textbox(
                        "",
                        lines=2,
                        label="More settings: key=value per line (any `train --set` key)",
                        elem_id="train-extra",
                        scale=3,
                    )
                train_note = gr.Markdown(toy_inputs.note, elem_id="train-image-note")
                with gr.Row():
                    first_frame = gr.Checkbox(
                        False,
                        label="Train from the first frame (image-to-video)",
                        info=actions.setting_meaning("first_frame"),
                        visible=toy_inputs.image_to_video,
                        elem_id="train-first-frame",
                    )
                    validation_image = gr.Image(
                        type="filepath",
                        format="png",  # Gradio's default, WebP, would re-encode the photo lossily
                        label="Validation image: the validation videos' first frame",
                        height=160,
                        visible=toy_inputs.image_to_video,
                        elem_id="train-validation-image",
                    )
                with gr.Row():
                    start_button = gr.Button("Start / resume", variant="primary", elem_id="train-start")
                    stop_button = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="train-stop")
                progress = gr.HTML(elem_id="train-progress")
                train_message = gr.HTML(elem_id="train-message", elem_classes="dr-message")
                loss_plot = gr.Image(label="Training loss", type="pil", height=300, elem_id="train-loss")
                validation = gr.Gallery(
                    label="Validation videos", columns=6, height=300, elem_id="train-validation"
                )
                lora_files = gr.File(
                    label="LoRA files (diffusers, ComfyUI, triplet)",
                    file_count="multiple",
                    elem_id="train-files",
                )
                timer = gr.Timer(1.0)

                def form(*values: Any) -> actions.TrainForm:
                    data, out, bb, mdl, dt, meth, nf, h, w, rec, prompt, more, ff, image, *settings = values
                    return actions.TrainForm(
                        data=data,
                        output=out,
                        backbone=bb,
                        model=mdl,
                        method=meth,
                        dtype=dt,
                        num_frames=int(nf or 0),
                        height=int(h or 0),
                        width=int(w or 0),
                        memory_recipe=rec,
                        settings=dict(zip(keys, settings, strict=True)),
                        validation_prompt=prompt or "",
                        extra=more or "",
                        first_frame=bool(ff),
                        validation_image=image or "",
                    )

                form_inputs = [
                    train_data,
                    output,
                    backbone,
                    model,
                    dtype,
                    method,
                    num_frames,
                    height,
                    width,
                    recipe,
                    validation_prompt,
                    extra,
                    first_frame,
                    validation_image,
                    *setting_boxes,
                ]
                shown = gr.State({})
                # the message stays last: on an error, guarded() puts it there
                status_outputs = [progress, loss_plot, validation, lora_files, shown, train_message]

                def status(out: str, note: str = "", before: dict | None = None) -> tuple:
                    """The run's state; the plot, videos and files only when they changed (redrawing
                    them every second would keep the plot from ever settling)."""
                    view = actions.training_view(board, ws, out)
                    key = [str(out), len(view.losses), len(view.validation_videos), len(view.lora_files)]
                    message = note or view.message
                    fresh = before is None or before.get("key") != key
                    videos = [(str(p), p.parent.name) for p in view.validation_videos]
                    files = [str(p) for p in view.lora_files] or None
                    return (
                        progress_html(view),
                        loss_image(view.losses) if fresh else gr.skip(),
                        videos if fresh else gr.skip(),
                        files if fresh else gr.skip(),
                        {"key": key, "message": message},
                        message_html(message) if fresh or before.get("message") != message else gr.skip(),
                    )

                def do_start(*values: Any) -> tuple:
                    job = actions.start_training(board, ws, form(*values))
                    return status(values[1], job.message)

                def do_stop(out: str) -> tuple:
                    return status(out, actions.stop_training(board, ws, out))

                def do_tick(out: str, before: dict) -> tuple:
                    try:
                        return status(out, "", before or {})
                    except DreamRelationError:
                        return (gr.skip(),) * len(status_outputs)

                def on_backbone(bb: str) -> tuple:
                    values = actions.default_settings(bb)
                    return (*actions.default_model(bb), *(values[k] for k in keys))

                n = len(status_outputs)
                start_button.click(guarded(do_start, n), form_inputs, status_outputs)
                stop_button.click(guarded(do_stop, n), [output], status_outputs)
                timer.tick(
                    do_tick, [output, shown], status_outputs, concurrency_limit=None, show_progress="hidden"
                )
                backbone.input(on_backbone, [backbone], [model, dtype, *setting_boxes])
                backbone.change(image_updates, [backbone], [first_frame, validation_image, train_note])

                def on_output(out: str) -> tuple:
                    """A run folder the page started before: its settings back in the fields."""
                    try:
                        saved = actions.saved_form(ws, out)
                    except DreamRelationError:
                        saved = None
                    if saved is None:
                        return (gr.skip(),) * (12 + len(keys))
                    fields = ("data", "backbone", "model", "dtype", "method", "video.num_frames")
                    return (
                        *(saved[f] for f in fields),
                        saved["video.height"],
                        saved["video.width"],
                        saved["validation_prompt"],
                        gr.skip(),
                        saved["first_frame"],
                        saved["validation_image"],
                        *(saved["settings"][k] for k in keys),
                    )

                restored = [train_data, backbone, model, dtype, method, num_frames, height, width]
                restored += [validation_prompt, extra, first_frame, validation_image, *setting_boxes]
                output.submit(on_output, [output], restored)
                app.load(on_output, [output], restored)
                data_state.change(lambda d: d, [data_state], [train_data])

            # ---------------------------------------------------------------- 3. generate
            with gr.Tab("3 · Generate", id="generate"):
                gen = toy["generation"]
                with gr.Row():
                    run = gr.Textbox(
                        "runs/ui-walking_towards",
                        label="Run folder (its relation_lora.safetensors)",
                        elem_id="gen-run",
                        scale=3,
                    )
                    lora = gr.Textbox("", label="or a LoRA file", elem_id="gen-lora", scale=3)
                prompt = gr.Textbox(toy["prompt"], label="Prompt", elem_id="gen-prompt")
                gen_image = gr.Image(
                    type="filepath",
                    format="png",
                    label="Start image: the first frame of both videos (aspect ratio width:height)",
                    height=200,
                    visible=toy_inputs.image_to_video,
                    elem_id="gen-image",
                )
                gen_note = gr.Markdown(toy_inputs.note, elem_id="gen-image-note")
                with gr.Row():
                    gen_backbone = gr.Dropdown(
                        names, value=actions.TOY_BACKBONE, label="Backbone", elem_id="gen-backbone"
                    )
                    gen_model = gr.Textbox(actions.TOY_MODEL, label="Model", elem_id="gen-model")
                    gen_dtype = gr.Dropdown(DTYPES, value="float32", label="Weights dtype")
                    seed = gr.Number(
                        0,
                        label="seed",
                        precision=0,
                        info=actions.generate_meaning("seed"),
                        elem_id="gen-seed",
                    )
                    steps = gr.Number(
                        gen["num_inference_steps"],
                        label="num_inference_steps",
                        precision=0,
                        info=actions.generate_meaning("num_inference_steps"),
                        elem_id="gen-steps",
                    )
                    guidance = gr.Number(
                        gen["guidance_scale"],
                        label="guidance_scale (CFG)",
                        info=actions.generate_meaning("guidance_scale"),
                    )
                with gr.Row():
                    gen_frames = gr.Number(gen["num_frames"], label="num_frames", precision=0)
                    gen_height = gr.Number(gen["height"], label="height", precision=0)
                    gen_width = gr.Number(gen["width"], label="width", precision=0)
                go = gr.Button(
                    "Render base and LoRA from the same noise", variant="primary", elem_id="gen-go"
                )
                gen_message = gr.HTML(elem_id="gen-message", elem_classes="dr-message")
                with gr.Row():
                    base_video = gr.Video(label="Base model", elem_id="gen-base", loop=True, autoplay=True)
                    lora_video = gr.Video(
                        label="Base + relation LoRA", elem_id="gen-lora-video", loop=True, autoplay=True
                    )
                downloads = gr.File(
                    label="Downloads: the MP4s and the LoRA files (diffusers and ComfyUI)",
                    file_count="multiple",
                    elem_id="gen-files",
                )

                def do_generate(*values: Any) -> tuple:
                    rn, lr, pr, bb, mdl, dt, sd, st, cfg, nf, h, w, image = values
                    gen_form = actions.GenerateForm(
                        run=rn,
                        prompt=pr or "",
                        backbone=bb,
                        model=mdl,
                        dtype=dt,
                        seed=sd,
                        steps=int(st or 0),
                        guidance=float(cfg if cfg is not None else 0),
                        num_frames=int(nf or 0),
                        height=int(h or 0),
                        width=int(w or 0),
                        lora=lr or "",
                        image=image or "",
                    )
                    base, with_lora = actions.generate_side_by_side(board, ws, gen_form)
                    run_folder = ws.path(rn, "run folder")
                    loras = [
                        run_folder / name for name in actions.LORA_FILES[:2] if (run_folder / name).is_file()
                    ]
                    files = [str(base), str(with_lora), *map(str, loras)]
                    note = f"Rendered with seed {sd}: {base} and {with_lora}."
                    return str(base), str(with_lora), files, message_html(note)

                gen_inputs = [
                    run,
                    lora,
                    prompt,
                    gen_backbone,
                    gen_model,
                    gen_dtype,
                    seed,
                    steps,
                    guidance,
                    gen_frames,
                    gen_height,
                    gen_width,
                    gen_image,
                ]
                go.click(
                    guarded(do_generate, 4), gen_inputs, [base_video, lora_video, downloads, gen_message]
                )
                output.change(lambda o: o, [output], [run])
                backbone.change(lambda b: b, [backbone], [gen_backbone])
                gen_backbone.change(lambda bb: image_updates(bb)[1:], [gen_backbone], [gen_image, gen_note])
                model.change(lambda m: m, [model], [gen_model])

            # ---------------------------------------------------------------- 4. compare
            with gr.Tab("4 · Compare", id="compare"):
                with gr.Row():
                    results = gr.Textbox(
                        label="A `benchmark` or `demo` output folder", elem_id="cmp-folder", scale=4
                    )
                    open_results = gr.Button("Open", elem_id="cmp-open")
                cmp_message = gr.HTML(elem_id="cmp-message", elem_classes="dr-message")
                table = gr.Markdown(elem_id="cmp-table")
                plot = gr.Image(label="Plot", type="filepath", elem_id="cmp-plot")
                plots = gr.Gallery(
                    label="More plots", columns=3, height=300, visible=False, elem_id="cmp-plots"
                )
                cmp_videos = gr.Gallery(label="Videos", columns=6, height=300, elem_id="cmp-videos")

                def do_results(text: str) -> tuple:
                    view = actions.open_results(ws, text)
                    note = f"{view.kind} results in {view.folder}"
                    items = [(str(p), label) for p, label in view.videos]
                    first = str(view.plots[0]) if view.plots else None
                    more = [str(p) for p in view.plots[1:]]
                    return (
                        view.table,
                        first,
                        gr.update(value=more, visible=bool(more)),
                        items,
                        message_html(note),
                    )

                cmp_outputs = [table, plot, plots, cmp_videos, cmp_message]
                open_results.click(guarded(do_results, 5), [results], cmp_outputs)
                results.submit(guarded(do_results, 5), [results], cmp_outputs)
    return app


def launch(
    roots: list[Path],
    host: str = "127.0.0.1",
    port: int = 7860,
    password: str | None = None,
    user: str = "dreamrelation",
    block: bool = True,
) -> Any:
    """Serve the UI; only files inside ``roots`` (and Gradio's own cache of them) are served. With
    ``block=False`` it returns at once with the page (``.close()`` stops the server)."""
    import gradio as gr

    ws = actions.Workspace(roots)
    app = build_app(ws)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        auth=(user, password) if password else None,
        allowed_paths=[str(root) for root in ws.roots],
        share=False,
        ssr_mode=False,
        quiet=True,
        prevent_thread_lock=not block,
        theme=theme,
        css=CSS,
        footer_links=[],
        max_file_size="1mb",
        enable_monitoring=False,
        mcp_server=False,
    )
    return app
