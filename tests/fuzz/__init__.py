"""Property-based fuzzing of the fused ops (hypothesis): every backend here against the float64 reference."""
