//! Strait's kernel programs. Each program lives in its own module; the maps
//! they share live in [`maps`]. Built by `cargo xtask build-ebpf` and embedded
//! in the `strait` binary.
#![no_std]
#![no_main]

mod connect4;
mod connect6;
mod deny6;
mod inpod;
mod lb4;
mod lb6;
mod maps;
mod maps6;
mod rev_nat;
mod sock_nat;
mod sockmap;
mod sockops;
mod tcp_release;
mod tcp_stats;
mod udp;
mod xdp_deny;
mod xdp_lb;
mod xdp_lb46;
mod xdp_lb6;
mod xdp_toobig;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Required by the kernel for GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
