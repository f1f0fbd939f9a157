// SPDX-License-Identifier: CERN-OHL-P-2.0
//
// Simple dual-port RAM: one synchronous write port, one synchronous read port
// (registered output, updated only when rd_en is high), single clock.
// Used as the storage of axis_fifo.

`timescale 1ns / 1ps

module fifo_ram #(
    parameter WIDTH      = 9,
    parameter ADDR_WIDTH = 4
) (
    input  wire                  clk,
    input  wire                  wr_en,
    input  wire [ADDR_WIDTH-1:0] wr_addr,
    input  wire [WIDTH-1:0]      wr_data,
    input  wire                  rd_en,
    input  wire [ADDR_WIDTH-1:0] rd_addr,
    output reg  [WIDTH-1:0]      rd_data
);

    reg [WIDTH-1:0] mem [0:(1<<ADDR_WIDTH)-1];

    always @(posedge clk) begin
        if (wr_en)
            mem[wr_addr] <= wr_data;
        if (rd_en)
            rd_data <= mem[rd_addr];
    end

endmodule
