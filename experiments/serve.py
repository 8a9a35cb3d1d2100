"""Serve adapters over one of this repository's model configs: ``python -m experiments.serve --model NAME``.

The server itself is the library's (`lora.serve`); this entry point only builds the base model from
``conf/model/NAME.yaml`` (offline packages, tiny random models) the way training does.

``--base-head`` (classify: serve adapters without a head with the base model's own classifier) is taken
for the random test models only (built from their seed, the same at each start): every other config
holds a pretrained language model, whose classifier transformers makes new and random at each start.
"""

from __future__ import annotations

import sys

from lora.serve import parser, serve

from .models import ModelError, build, load_tokenizer, model_conf


def main(argv=None) -> int:
    args = parser("python -m experiments.serve", ("--model", "a model config name (conf/model/NAME.yaml)"))
    args = args.parse_args(argv)
    head = "seq_cls" if args.task == "classify" else "causal_lm"

    def load_model():
        if args.task == "classify" and args.base_head and not model_conf(args.model).get("random"):
            raise ModelError(
                f"--base-head: model {args.model!r} holds no trained classifier (transformers makes a new random "
                "one at each start); leave --base-head out and serve adapters saved with their head"
            )
        return build(args.model, head=head, num_labels=args.num_labels), load_tokenizer(args.model)

    return serve(args, load_model, user_errors=(ModelError,))


if __name__ == "__main__":
    sys.exit(main())
