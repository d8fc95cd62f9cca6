from hetsearch.train.trainer import CHECKPOINT_LAST, FINAL_MODEL, Trainer, TrainResult, train

__all__ = ["Trainer", "TrainResult", "train", "CHECKPOINT_LAST", "FINAL_MODEL"]
