"""What a run writes and reads: checkpoints, evaluation, records, tracking, video."""
