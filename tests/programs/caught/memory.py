# Allocates until the sandbox refuses (MemoryError), catches that and exits 0; stops at 8 GiB
# in case nothing refuses.
blocks = []
try:
    while len(blocks) < 512:
        blocks.append(bytearray(16 << 20))
except MemoryError:
    pass
n = len(blocks)
blocks = None
print("caught after", n * 16, "MiB")
