"""The book: the papermill runner of the notebook chain (`runner`, `chain`), its provenance page,
`collect` for batch reruns, and the figure helpers the chapters draw with (`plots`)."""
