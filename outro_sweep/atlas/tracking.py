"""The atlas's W&B run: ``job_type=atlas``, run id = the atlas identity, the figures as images,
the per-layer numbers as history (step = layer) and the suggestion in the summary. The
``logger`` group's settings (offline by default; ``logger.mode=disabled``: no run)."""

from __future__ import annotations

from pathlib import Path

from outro_sweep.cell.tracking import keep_wandb_files_under, run_settings, use_own_wandb_service
from outro_sweep.files.masking import mask


def per_layer_rows(atlas: dict) -> list[dict]:
    rows = []
    for layer in range(atlas["layers"]):
        row = {"layer": layer, "massive/top1": atlas["massive"]["top3"][layer][0],
               "massive/median": atlas["massive"]["median"][layer],
               "attention/first_token_mass": atlas["attention"]["mass"][layer],
               "attention/sink_rate": atlas["attention"]["sink_rate"][layer],
               "dims/count": len(atlas["dims"]["layer_dims"][layer])}
        for key in ("cosine", "share"):
            if atlas["value_share"][key][layer] is not None:
                row[f"value_share/{key}"] = atlas["value_share"][key][layer]
        if atlas["modality"]["measured"]:
            for name, values in atlas["modality"]["sinks"].items():
                row[f"modality/{name}_sinks"] = values[layer]
            row["modality/lsinks"] = atlas["modality"]["lsinks"][layer]
        for name, rule in atlas["rules"]["rules"].items():
            row[f"rules/{name}/rate"] = rule["rate"][layer]
        rows.append(row)
    return rows


def log_atlas(cfg, config: dict, atlas: dict, directory: Path) -> None:
    logger = cfg.logger
    if logger.mode == "disabled":
        return
    import wandb

    keep_wandb_files_under(cfg.paths.output_dir)
    use_own_wandb_service()
    run = wandb.init(id=atlas["identity"], resume="allow", project=logger.project, entity=logger.entity,
                     group=f"atlas-{atlas['model']}", name=f"atlas {atlas['model']} {atlas['identity']}",
                     job_type="atlas", tags=mask(list(logger.tags)), config=mask(config), dir=str(directory),
                     mode=logger.mode, reinit="finish_previous", settings=run_settings(logger.get("api_key")))
    try:
        for row in per_layer_rows(atlas):
            run.log(row, step=row["layer"])
        run.log({f"figures/{Path(name).stem}": wandb.Image(str(directory / name)) for name in atlas["figures"]},
                step=atlas["layers"])
        suggestion = atlas["suggestion"]
        run.summary.update({"suggestion": suggestion["line"], "command": suggestion["command"],
                            "relax_layers": suggestion["relax_layers"], "sink_dims": suggestion["sink_dims"],
                            "model_sink_rate": atlas["attention"]["model_sink_rate"], "prompts": atlas["prompts"]})
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(exit_code=0)
