// SPDX-License-Identifier: CERN-OHL-P-2.0
//
// Synchronous AXI4-Stream FIFO (tdata + tlast), single clock, synchronous
// active-high reset.
//
// * Storage: fifo_ram (2**ADDR_WIDTH words of DATA_WIDTH+1 bits, the extra
//   bit carries tlast) followed by one output register stage, so the total
//   capacity is 2**ADDR_WIDTH + 1 beats.
// * s_axis_tready is low while the RAM is full or reset is asserted.
// * m_axis_* is driven straight from the RAM's registered read port: a word is
//   read only when the output stage is empty or being consumed this cycle.

`timescale 1ns / 1ps

module axis_fifo #(
    parameter DATA_WIDTH = 8,
    parameter ADDR_WIDTH = 4
) (
    input  wire                  clk,
    input  wire                  rst,

    // AXI4-Stream slave (input) side
    input  wire [DATA_WIDTH-1:0] s_axis_tdata,
    input  wire                  s_axis_tvalid,
    output wire                  s_axis_tready,
    input  wire                  s_axis_tlast,

    // AXI4-Stream master (output) side
    output wire [DATA_WIDTH-1:0] m_axis_tdata,
    output wire                  m_axis_tvalid,
    input  wire                  m_axis_tready,
    output wire                  m_axis_tlast
);

    // Pointers carry one extra wrap bit to tell full from empty.
    reg  [ADDR_WIDTH:0] wr_ptr;
    reg  [ADDR_WIDTH:0] rd_ptr;
    reg                 out_valid;

    wire empty = (wr_ptr == rd_ptr);
    wire full  = (wr_ptr[ADDR_WIDTH] != rd_ptr[ADDR_WIDTH]) &&
                 (wr_ptr[ADDR_WIDTH-1:0] == rd_ptr[ADDR_WIDTH-1:0]);

    wire wr_en = s_axis_tvalid & s_axis_tready;
    wire rd_en = ~empty & (~out_valid | m_axis_tready);

    assign s_axis_tready = ~full & ~rst;
    assign m_axis_tvalid = out_valid;

    always @(posedge clk) begin
        if (rst) begin
            wr_ptr    <= {(ADDR_WIDTH+1){1'b0}};
            rd_ptr    <= {(ADDR_WIDTH+1){1'b0}};
            out_valid <= 1'b0;
        end else begin
            if (wr_en)
                wr_ptr <= wr_ptr + 1'b1;
            if (rd_en) begin
                rd_ptr    <= rd_ptr + 1'b1;
                out_valid <= 1'b1;
            end else if (m_axis_tready) begin
                out_valid <= 1'b0;
            end
        end
    end

    fifo_ram #(
        .WIDTH      (DATA_WIDTH + 1),
        .ADDR_WIDTH (ADDR_WIDTH)
    ) u_ram (
        .clk     (clk),
        .wr_en   (wr_en),
        .wr_addr (wr_ptr[ADDR_WIDTH-1:0]),
        .wr_data ({s_axis_tlast, s_axis_tdata}),
        .rd_en   (rd_en),
        .rd_addr (rd_ptr[ADDR_WIDTH-1:0]),
        .rd_data ({m_axis_tlast, m_axis_tdata})
    );

endmodule
