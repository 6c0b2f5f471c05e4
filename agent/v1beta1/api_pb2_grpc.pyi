# Written by hand, not generated: grpcio-tools makes no type stub for the service module, and
# without one mypy --strict would check the generated code itself. Only what virtdev uses.
from typing import Any

class RegistrationStub:
    Register: Any
    def __init__(self, channel: Any) -> None: ...

class DevicePluginStub:
    GetDevicePluginOptions: Any
    ListAndWatch: Any
    GetPreferredAllocation: Any
    Allocate: Any
    PreStartContainer: Any
    def __init__(self, channel: Any) -> None: ...

def add_RegistrationServicer_to_server(servicer: Any, server: Any) -> None: ...
def add_DevicePluginServicer_to_server(servicer: Any, server: Any) -> None: ...
