# Reads a VHD chain's virtual disk through libvhdi (pyvhdi) and writes it to stdout.
# Usage: pyvhdi_read.py TOP [PARENT ...]   (each image's parent follows it)
import sys
import pyvhdi

files = []
for p in sys.argv[1:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
top = files[0]
size = top.get_media_size()
out = sys.stdout.buffer
off = 0
while off < size:
    n = min(1 << 20, size - off)
    out.write(top.read_buffer_at_offset(n, off))
    off += n
