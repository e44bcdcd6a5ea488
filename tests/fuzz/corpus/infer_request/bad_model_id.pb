
../../etc/passwd 