"""Shared state: the per-model board that server/, observe/ and reconcile/ read and write."""
