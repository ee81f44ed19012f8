"""``python -m trafficstream.bench.synthetic``: render one clip, print its three paths as JSON.

``--family NAME`` starts from a scene family (``bench.synthetic.families``; ``--list-families`` lists them);
explicit scene options still override its values."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import fields

from trafficstream.bench import synthetic
from trafficstream.bench.synthetic.bank import default_cache_dir
from trafficstream.bench.synthetic.clip import generate
from trafficstream.bench.synthetic.families import FAMILIES, family_scene
from trafficstream.bench.synthetic.scene import LIGHTS, SceneParams
from trafficstream.logs import setup_logging

_CLI_NAMES = {"n_vehicles": "vehicles", "duration_s": "duration"}


def _scene_from_args(args: argparse.Namespace) -> SceneParams:
    values = {f.name: getattr(args, f.name) for f in fields(SceneParams) if getattr(args, f.name, None) is not None}
    return family_scene(args.family, **values) if args.family else SceneParams(**values)


def _list_families() -> str:
    width = max(map(len, FAMILIES))
    return "\n".join(f"{name:<{width}}  {family.description}" for name, family in FAMILIES.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.synthetic", description=synthetic.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", help="output folder (created); required unless --list-families")
    parser.add_argument("--family", choices=list(FAMILIES), default=None, help="start from this scene family")
    parser.add_argument("--list-families", action="store_true", help="print the scene families and exit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="sample data folder (default: the configured data_dir)")
    parser.add_argument("--model", default=None, help="detector ONNX used to cut vehicle sprites")
    parser.add_argument("--cache-dir", default=None, help=f"sprite bank cache (default {default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="rebuild the sprite bank, keep nothing on disk")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--geometry",
        action="store_const",
        const=True,
        default=None,
        help="counting lines, lanes, queue zone and their ground truth (default: with traffic events)",
    )
    defaults = SceneParams()
    for f in fields(SceneParams):
        if isinstance(getattr(defaults, f.name), tuple):  # ranges and lists: Python only
            continue
        flag = "--" + _CLI_NAMES.get(f.name, f.name).replace("_", "-")
        default = getattr(defaults, f.name)
        helps = f"default {default}"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=helps)
        elif isinstance(default, str):
            parser.add_argument(flag, dest=f.name, choices=LIGHTS, default=None, help=helps)
        else:
            kind = int if isinstance(default, int) else float
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=helps)
    args = parser.parse_args(argv)
    if args.list_families:
        print(_list_families())
        return 0
    if not args.out:
        parser.error("--out is required")
    setup_logging(args.log_level)
    clip = generate(
        args.out,
        _scene_from_args(args),
        args.seed,
        data_dir=args.data_dir,
        model_path=args.model,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
        geometry=args.geometry,
    )
    print(
        json.dumps(
            {
                "video": str(clip.video_path),
                "ground_truth": str(clip.ground_truth_path),
                "config": str(clip.config_path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
