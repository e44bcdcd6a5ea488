

fuzz-model