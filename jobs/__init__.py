"""Ray jobs for rmcluster. `python -m jobs.score_corpus` scores a corpus into a results store."""
