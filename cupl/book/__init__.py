"""The book: the papermill runner of the notebook chain (`runner`, `chain`), its provenance page,
`collect` for batch reruns, the figure helpers the chapters draw with (`plots`), and `performance`,
the benchmark results and speed goals of the performance appendix."""
