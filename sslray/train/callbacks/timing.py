"""Where the last epoch's time went, said once training ends: data or compute?"""

from __future__ import annotations

from . import Callback, LastEpoch


class TimingLine(Callback):
    """The last epoch's shares of time (waiting for data, host to device, decoding on the device,
    steps) and its throughput, as one console line after training."""

    def __init__(self, last: LastEpoch):
        self.last = last

    def on_end(self):
        last = self.last.logs
        if "time/data_wait" not in last:
            return
        print(f"time: data wait {100 * last['time/data_wait']:.1f}%, host to device "
              f"{100 * last['time/host_to_device']:.1f}%, decode on device {100 * last['time/decode']:.1f}%, steps "
              f"{100 * last['time/step']:.1f}%"
              + (f", device idle between steps {100 * last['time/device_idle']:.1f}%" if "time/device_idle" in last else "")
              + f"; {last['train/img_per_s']:.0f} img/s ({last['train/img_per_s_worker']:.0f} per worker)", flush=True)
