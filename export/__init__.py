"""Serving trained clustering models: SavedModel export, a gRPC client and a dev gRPC server that
speak TensorFlow Serving's PredictionService."""
