"""Entry point. Until the Hydra runner lands, `python run.py` runs the offline LoRA demo on MiniLM + SST-2."""

from experiments.demo import main

if __name__ == "__main__":
    main()
