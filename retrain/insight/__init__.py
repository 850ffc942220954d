"""What a run shows about its model: TensorBoard pictures and the run report."""
