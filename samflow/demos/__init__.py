"""`samflow demo`: a synthetic scene (or any image) segmented through one graph, drawn as pictures (`scenes`), and
the text-prompt demo (`text`)."""
