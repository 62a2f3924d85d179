# Fills the folder named by its argument until the disk refuses (OSError: ENOSPC, or the
# file-size limit), catches that, and exits 0; stops at 1 GiB in case nothing refuses.
import os
import sys

path = os.path.join(sys.argv[1], "fill-%d" % os.getpid())
chunk = b"x" * (1 << 20)
n = 0
try:
    with open(path, "wb") as f:
        while n < 1024:
            f.write(chunk)
            f.flush()
            n += 1
except OSError:
    pass
print("caught after", n, "MiB")
