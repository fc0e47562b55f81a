#!/usr/bin/python3
"""External PoolService client for the end-to-end tests.

Debian's python3-grpcio and python3-protobuf drive every poold.v1.PoolService
RPC against a running poold, so the data path is also tested through a client
that shares no code with poold: blocks in all three pools with known contents,
partial reads and writes, frees, statistics, an analysis and a
defragmentation whose reclaim equals the projection, every surviving block
read back byte-exact, and the documented error codes.

Usage: pool_client.py TARGET
Prints one line per check and "pool_client: all checks passed" and exits 0;
prints "FAILED: ..." and exits 1 at the first failed check. The poold under
test must run with --cache_decay=inf (no cached memory is released between
the analysis and the defragmentation). pool_service_pb2 is generated from
protos/poold/v1/pool_service.proto by the build (PYTHONPATH points to it).
"""

import random
import sys

import grpc
from poold.v1 import pool_service_pb2 as pb

SERVICE = "/poold.v1.PoolService/"
TIMEOUT = 30


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


class Pool:
    """One unary callable per RPC, with the generated message classes."""

    def __init__(self, channel):
        def rpc(name, request, response):
            return channel.unary_unary(
                SERVICE + name,
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )

        self.allocate = rpc("Allocate", pb.AllocateRequest, pb.AllocateResponse)
        self.write = rpc("Write", pb.WriteRequest, pb.WriteResponse)
        self.read = rpc("Read", pb.ReadRequest, pb.ReadResponse)
        self.free = rpc("Free", pb.FreeRequest, pb.FreeResponse)
        self.get_stats = rpc("GetStats", pb.GetStatsRequest, pb.GetStatsResponse)
        self.analyze = rpc(
            "AnalyzeFragmentation",
            pb.AnalyzeFragmentationRequest,
            pb.FragmentationReport,
        )
        self.defragment = rpc(
            "TriggerDefragmentation",
            pb.TriggerDefragmentationRequest,
            pb.DefragReport,
        )


def expect_code(call, request, code, what):
    try:
        call(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        check(
            error.code() == code,
            f"{what}: expected {code.name}, got {error.code().name} "
            f"({error.details()})",
        )
        print(f"ok: {what}: {code.name}")
        return
    raise CheckFailed(f"{what}: expected {code.name}, got OK")


def contents(seed, size):
    return random.Random(seed).randbytes(size)


def read_all(pool, blocks):
    for handle, (seed, size) in blocks.items():
        data = pool.read(pb.ReadRequest(handle=handle), timeout=TIMEOUT).data
        check(data == contents(seed, size), f"block {handle} reads back changed")


def run(pool):
    rng = random.Random(7)
    blocks = {}  # handle -> (seed, size)
    expected_pool = {}
    sizes = [1, 100, 1023, 1024, 5000, 65535, 65536, 300000]
    sizes += [rng.randint(1, 1023) for _ in range(600)]
    sizes += [rng.randint(1024, 65535) for _ in range(60)]
    # Several spans of one size class, so the defragmentation moves blocks.
    sizes += [200] * 1500
    for seed, size in enumerate(sizes):
        response = pool.allocate(
            pb.AllocateRequest(size=size, data=contents(seed, size)),
            timeout=TIMEOUT,
        )
        check(response.handle != 0, "handle 0 issued")
        check(response.handle not in blocks, "a handle issued twice")
        check(response.block_size == size, f"block_size {response.block_size}")
        check(response.slot_bytes >= size, f"slot_bytes {response.slot_bytes}")
        want = pb.POOL_SMALL if size < 1024 else (
            pb.POOL_MEDIUM if size < 65536 else pb.POOL_LARGE)
        check(response.pool == want, f"size {size} in {response.pool}")
        blocks[response.handle] = (seed, size)
        expected_pool[response.pool] = expected_pool.get(response.pool, 0) + 1
    print(f"ok: allocated {len(blocks)} blocks in pools {sorted(expected_pool)}")

    # Size 0 with data: the size is the data's length.
    response = pool.allocate(pb.AllocateRequest(data=b"hello"), timeout=TIMEOUT)
    check(response.block_size == 5, "size 0 with data")
    check(
        pool.read(pb.ReadRequest(handle=response.handle), timeout=TIMEOUT).data
        == b"hello",
        "size 0 with data reads back",
    )
    pool.free(pb.FreeRequest(handle=response.handle), timeout=TIMEOUT)

    # Partial read and write on a medium block; zero fill behind short data.
    handle = next(h for h, (s, size) in blocks.items() if size == 5000)
    seed, size = blocks[handle]
    part = pool.read(
        pb.ReadRequest(handle=handle, offset=1000, length=10), timeout=TIMEOUT
    ).data
    check(part == contents(seed, size)[1000:1010], "partial read")
    patched = bytearray(contents(seed, size))
    patched[4990:] = b"0123456789"
    pool.write(
        pb.WriteRequest(handle=handle, offset=4990, data=b"0123456789"),
        timeout=TIMEOUT,
    )
    data = pool.read(pb.ReadRequest(handle=handle), timeout=TIMEOUT).data
    check(data == bytes(patched), "write then read")
    pool.write(
        pb.WriteRequest(handle=handle, offset=4990,
                        data=contents(seed, size)[4990:]),
        timeout=TIMEOUT,
    )
    zeroed = pool.allocate(pb.AllocateRequest(size=64, data=b"ab"),
                           timeout=TIMEOUT)
    data = pool.read(pb.ReadRequest(handle=zeroed.handle), timeout=TIMEOUT).data
    check(data == b"ab" + bytes(62), "a block starts zeroed behind its data")
    pool.free(pb.FreeRequest(handle=zeroed.handle), timeout=TIMEOUT)
    print("ok: partial read, write, zero fill")

    read_all(pool, blocks)
    print(f"ok: {len(blocks)} blocks read back byte-exact")

    # Free two thirds at random.
    handles = list(blocks)
    rng.shuffle(handles)
    freed = handles[: len(handles) * 2 // 3]
    for handle in freed:
        pool.free(pb.FreeRequest(handle=handle), timeout=TIMEOUT)
        del blocks[handle]
    live = sum(size for seed, size in blocks.values())
    stats = pool.get_stats(pb.GetStatsRequest(include_classes=True, consistent=True),
                           timeout=TIMEOUT)
    check(stats.total.blocks == len(blocks), f"blocks {stats.total.blocks}")
    check(stats.total.live_bytes == live, f"live_bytes {stats.total.live_bytes}")
    check([p.pool for p in stats.pools] ==
          [pb.POOL_SMALL, pb.POOL_MEDIUM, pb.POOL_LARGE], "pools in order")
    check(any(p.classes for p in stats.pools), "size classes included")
    check(stats.worker.commands_completed["Allocate"] >= len(sizes),
          "worker counts Allocate")
    check(stats.worker.commands_completed["Free"] >= len(freed),
          "worker counts Free")
    print(f"ok: freed {len(freed)}; stats: {stats.total.blocks} blocks, "
          f"{live} live bytes, {stats.total.resident_bytes} resident")

    analysis = pool.analyze(pb.AnalyzeFragmentationRequest(), timeout=TIMEOUT)
    check(len(analysis.pools) == 3, "analysis of all pools")
    projected = analysis.projected_bytes_reclaimed
    check(projected > 0, "something to reclaim")
    check(projected == analysis.total.reclaimable_bytes, "projection")
    report = pool.defragment(pb.TriggerDefragmentationRequest(),
                             timeout=TIMEOUT)
    check(report.complete, "defragmentation complete")
    check(report.bytes_reclaimed == projected,
          f"reclaimed {report.bytes_reclaimed}, projected {projected}")
    check(report.pools_failed == 0 and report.pools_partial == 0,
          "no pool failed or partial")
    check(report.blocks_moved > 0, "blocks moved")
    check(report.rss_before_bytes > 0 and report.rss_after_bytes > 0,
          "RSS reported")
    print(f"ok: defragmentation reclaimed {report.bytes_reclaimed} bytes "
          f"(projected {projected}), moved {report.blocks_moved} blocks")

    read_all(pool, blocks)
    print(f"ok: {len(blocks)} surviving blocks read back byte-exact")

    # Documented errors.
    some = next(iter(blocks))
    size = blocks[some][1]
    expect_code(pool.allocate, pb.AllocateRequest(),
                grpc.StatusCode.INVALID_ARGUMENT, "Allocate size 0, no data")
    expect_code(pool.allocate, pb.AllocateRequest(size=3, data=b"four"),
                grpc.StatusCode.INVALID_ARGUMENT, "Allocate data > size")
    expect_code(pool.read, pb.ReadRequest(handle=freed[0]),
                grpc.StatusCode.NOT_FOUND, "Read freed handle")
    expect_code(pool.free, pb.FreeRequest(handle=freed[0]),
                grpc.StatusCode.NOT_FOUND, "Free freed handle")
    expect_code(pool.read, pb.ReadRequest(handle=some ^ (1 << 40)),
                grpc.StatusCode.NOT_FOUND, "Read forged handle")
    expect_code(pool.read, pb.ReadRequest(handle=some, offset=size + 1),
                grpc.StatusCode.OUT_OF_RANGE, "Read offset past the end")
    expect_code(pool.read,
                pb.ReadRequest(handle=some, offset=2**64 - 1, length=2),
                grpc.StatusCode.OUT_OF_RANGE, "Read offset+length overflow")
    expect_code(pool.write, pb.WriteRequest(handle=some, offset=size,
                                            data=b"x"),
                grpc.StatusCode.OUT_OF_RANGE, "Write past the end")
    expect_code(pool.analyze, pb.AnalyzeFragmentationRequest(pools=[17]),
                grpc.StatusCode.INVALID_ARGUMENT, "Analyze pool 17")
    expect_code(pool.defragment,
                pb.TriggerDefragmentationRequest(pools=[pb.POOL_UNSPECIFIED]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "TriggerDefragmentation POOL_UNSPECIFIED")

    for handle in list(blocks):
        pool.free(pb.FreeRequest(handle=handle), timeout=TIMEOUT)
    stats = pool.get_stats(pb.GetStatsRequest(consistent=True),
                           timeout=TIMEOUT)
    check(stats.total.blocks == 0 and stats.total.live_bytes == 0,
          "everything freed")
    print("ok: everything freed")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with grpc.insecure_channel(argv[1]) as channel:
        try:
            run(Pool(channel))
        except CheckFailed as failure:
            print(f"FAILED: {failure}")
            return 1
        except grpc.RpcError as error:
            print(f"FAILED: unexpected {error.code().name}: {error.details()}")
            return 1
    print("pool_client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
