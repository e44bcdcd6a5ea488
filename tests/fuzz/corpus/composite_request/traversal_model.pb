
../fuzz-avatar 