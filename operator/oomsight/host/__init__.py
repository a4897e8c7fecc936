"""Node adapters: cgroupfs, /dev/kmsg, /proc. OS errors become ``oomsight.host.errors`` exceptions here."""
